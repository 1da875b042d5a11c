"""Locust load tests of the ensemble. One job per module: workloads (what users ask),
streams (one timed request per protocol), samples (raw measurements, JSONL), metrics
(genai-perf definitions), report and plots (end of run), locustfile (the Locust users),
runner (Locust processes), sweep and baseline (concurrency levels, drafting on vs off),
cli (`triton-eagle loadtest`). See docs/loadtest.md."""
