"""Prometheus metrics of the `tensorrt_llm` model, served on Triton's metrics port.

Two rules from running it (shared/reference/triton-cpu.md): the families must stay
referenced (a collected family's metrics vanish), and every update must come from one
thread (updates from several threads crashed tritonserver), so the model calls these
methods only from its event loop.
"""
from __future__ import annotations

import triton_python_backend_utils as pb_utils

from python_backend.protocol import SpeculativeStats

ACCEPTANCE_LENGTH_BUCKETS = [1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 8.0]
FINISH_REASONS = ("stop", "length", "cancelled", "error")


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
        ]
        (active, engine_active, requests, prompt_tokens, output_tokens, draft_tokens,
         accepted_tokens, drafting_steps, acceptance_length) = self._families
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

    def set_active(self, model_active: int, engine_active: int) -> None:
        self.active.set(model_active)
        self.engine_active.set(engine_active)

    def request_refused(self) -> None:
        self.requests["error"].increment(1)

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
        for name in ("active", "engine_active", "prompt_tokens", "output_tokens", "draft_tokens",
                     "accepted_tokens", "drafting_steps", "acceptance_length"):
            setattr(self, name, None)
        self._families.clear()
