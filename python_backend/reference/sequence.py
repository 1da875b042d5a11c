"""The per-request state the scheduler and the speculative loop share."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from python_backend.protocol import SamplingParams, SpeculativeStats, TimingStats


@dataclass
class SequenceState:
    request_id: int
    prompt_ids: list[int]
    params: SamplingParams
    end_id: int
    sink: object                       # protocol.QueueResult: receives StepOutputs
    rng: np.random.Generator
    output_ids: list[int] = field(default_factory=list)
    target_cache: object | None = None  # llama.KVCache, created at prefill
    draft_cache: object | None = None   # eagle3 cache, created at the first draft
    # The last emitted token, not yet fed to the target (x_n of the next round).
    pending_token: int | None = None
    # Draft catch-up: tokens x_{j+1} and fused target features f_j for rows the
    # draft has not seen yet (the prompt after prefill, the accepted tokens after
    # a verification round).
    catchup_token_ids: list[int] = field(default_factory=list)
    catchup_features: np.ndarray | None = None
    stats: SpeculativeStats = field(default_factory=SpeculativeStats)
    timing: TimingStats = field(default_factory=lambda: TimingStats(arrival_time=time.monotonic()))
    finish_reason: str | None = None

    @property
    def num_tokens(self) -> int:
        """Tokens in the sequence so far (prompt + generated)."""
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def prefilled(self) -> bool:
        return self.target_cache is not None

    def history_tail(self, length: int) -> list[int]:
        """The last `length` tokens of prompt + output (bad-word prefix matching)."""
        if length <= 0:
            return []
        if length <= len(self.output_ids):
            return self.output_ids[-length:]
        return (self.prompt_ids + self.output_ids)[-length:]
