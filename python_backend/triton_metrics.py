"""Prometheus metrics of the `tensorrt_llm` model, served on Triton's metrics port.

Two rules from running it: the families must stay
referenced (a collected family's metrics vanish), and every update must come from one
thread (updates from several threads crashed tritonserver), so the model calls these
methods only from its event loop.
"""
from __future__ import annotations

import triton_python_backend_utils as pb_utils

from python_backend.protocol import SpeculativeStats, TimingStats

ACCEPTANCE_LENGTH_BUCKETS = [1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 8.0]
FINISH_REASONS = ("stop", "length", "cancelled", "error")
# seconds: queue waits span ms (idle) to minutes (a full queue on the CPU engine)
LATENCY_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0]
REFUSAL_REASONS = ("busy", "engine_failed")


class EngineModelMetrics:
    def __init__(self, model_name: str, model_version: str):
        labels = {"model": model_name, "version": model_version}
        family = pb_utils.MetricFamily
        self._families = [
            family("triton_eagle_active_requests", "Requests being generated now; a cancelled or "
                   "stopped request leaves this count once the engine has dropped it", family.GAUGE),
            family("triton_eagle_engine_active_requests", "Requests the engine holds (its own count)",
                   family.GAUGE),
            family("triton_eagle_requests_total", "Finished requests by finish reason "
                   "(refused ones count as error)", family.COUNTER),
            family("triton_eagle_prompt_tokens_total", "Prompt tokens of accepted requests", family.COUNTER),
            family("triton_eagle_output_tokens_total", "Tokens sent to clients", family.COUNTER),
            family("triton_eagle_draft_tokens_total", "Draft tokens proposed to the target model",
                   family.COUNTER),
            family("triton_eagle_accepted_draft_tokens_total", "Draft tokens the target accepted",
                   family.COUNTER),
            family("triton_eagle_drafting_steps_total", "Engine steps that verified a draft "
                   "(acceptance length = 1 + accepted / drafting steps)", family.COUNTER),
            family("triton_eagle_acceptance_length", "Per request: mean tokens per drafting step",
                   family.HISTOGRAM),
            family("triton_eagle_queue_depth", "Admitted requests waiting for a batch slot "
                   "(admitted beyond max_batch_size)", family.GAUGE),
            family("triton_eagle_refused_total", "Requests refused at admission, by reason (busy: queue "
                   "full or draining; engine_failed)", family.COUNTER),
            family("triton_eagle_queue_time_seconds", "Time to first token, part 1: arrival to first "
                   "scheduled in a batch (as the engine reports it)", family.HISTOGRAM),
            family("triton_eagle_prefill_time_seconds", "Time to first token, part 2: first scheduled "
                   "to first token (prefill)", family.HISTOGRAM),
        ]
        (active, engine_active, requests, prompt_tokens, output_tokens, draft_tokens,
         accepted_tokens, drafting_steps, acceptance_length, queue_depth, refused, queue_time,
         prefill_time) = self._families
        self.active = active.Metric(labels=labels)
        self.engine_active = engine_active.Metric(labels=labels)
        self.requests = {reason: requests.Metric(labels={**labels, "finish_reason": reason})
                         for reason in FINISH_REASONS}
        self.prompt_tokens = prompt_tokens.Metric(labels=labels)
        self.output_tokens = output_tokens.Metric(labels=labels)
        self.draft_tokens = draft_tokens.Metric(labels=labels)
        self.accepted_tokens = accepted_tokens.Metric(labels=labels)
        self.drafting_steps = drafting_steps.Metric(labels=labels)
        self.acceptance_length = acceptance_length.Metric(labels=labels, buckets=ACCEPTANCE_LENGTH_BUCKETS)
        self.queue_depth = queue_depth.Metric(labels=labels)
        self.refused = {reason: refused.Metric(labels={**labels, "reason": reason}) for reason in REFUSAL_REASONS}
        self.queue_time = queue_time.Metric(labels=labels, buckets=LATENCY_BUCKETS_S)
        self.prefill_time = prefill_time.Metric(labels=labels, buckets=LATENCY_BUCKETS_S)

    def set_active(self, model_active: int, engine_active: int) -> None:
        self.active.set(model_active)
        self.engine_active.set(engine_active)

    def request_refused(self) -> None:
        self.requests["error"].increment(1)

    def refused_at_admission(self, reason: str) -> None:
        self.refused[reason].increment(1)

    def set_queue_depth(self, depth: int) -> None:
        self.queue_depth.set(depth)

    def first_token(self, timing: TimingStats) -> None:
        """TTFT split, when the engine reports its instants (zero = not reported)."""
        if timing.arrival_time and timing.first_scheduled_time:
            self.queue_time.observe(max(timing.first_scheduled_time - timing.arrival_time, 0.0))
            if timing.first_token_time:
                self.prefill_time.observe(max(timing.first_token_time - timing.first_scheduled_time, 0.0))

    def request_started(self, prompt_tokens: int) -> None:
        self.prompt_tokens.increment(prompt_tokens)

    def step(self, output_tokens: int, stats_delta: SpeculativeStats) -> None:
        """Per response, so the token counters move while a request streams."""
        if output_tokens:
            self.output_tokens.increment(output_tokens)
        if stats_delta.total_draft_tokens:
            self.draft_tokens.increment(stats_delta.total_draft_tokens)
        if stats_delta.total_accepted_draft_tokens:
            self.accepted_tokens.increment(stats_delta.total_accepted_draft_tokens)
        if stats_delta.drafting_steps:
            self.drafting_steps.increment(stats_delta.drafting_steps)

    def request_finished(self, finish_reason: str, stats: SpeculativeStats) -> None:
        self.requests.get(finish_reason, self.requests["error"]).increment(1)
        if stats.drafting_steps:
            self.acceptance_length.observe(stats.acceptance_length)

    def close(self) -> None:
        # metrics before their families, as the Python backend requires
        self.requests.clear()
        self.refused.clear()
        for name in ("active", "engine_active", "prompt_tokens", "output_tokens", "draft_tokens",
                     "accepted_tokens", "drafting_steps", "acceptance_length", "queue_depth", "queue_time",
                     "prefill_time"):
            setattr(self, name, None)
        self._families.clear()
