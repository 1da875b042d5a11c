"""How many tokens to draft in a step, by load: TensorRT-LLM's `speculative_config.max_concurrency`
and `draft_len_schedule`, for the reference engine.

Drafting pays while the target's verification pass is cheap next to a decode step; at high
load (and on a CPU, early) it is not, so TensorRT-LLM lets a deployment turn drafting off above
`max_concurrency` requests, or shorten it per batch size with `draft_len_schedule`. The rules
follow its `Drafter` (tensorrt_llm/_torch/speculative/drafter.py, 1.1-1.2): the request count
is capped by max_batch_size and by how many K+1-token requests fit in max_num_tokens; a
schedule maps the largest threshold <= the batch size to a draft length, 0 = off.
"""
from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass


@dataclass(frozen=True)
class DraftPolicy:
    max_draft_len: int
    max_batch_size: int
    max_num_tokens: int
    max_concurrency: int | None = None
    draft_len_schedule: dict[int, int] | None = None

    def __post_init__(self):
        check_draft_limits(self.max_draft_len, self.max_concurrency, self.draft_len_schedule)

    def draft_len(self, num_requests: int) -> int:
        """Draft tokens per request for a step that runs `num_requests` requests (0 = no drafting)."""
        if self.max_draft_len == 0 or num_requests < 1:
            return 0
        if self.max_concurrency is not None:
            token_cap = self.max_num_tokens // (1 + self.max_draft_len)
            if min(num_requests, self.max_batch_size, token_cap) > self.max_concurrency:
                return 0
        if self.draft_len_schedule:
            thresholds = sorted(self.draft_len_schedule)
            index = bisect_right(thresholds, num_requests)
            return self.draft_len_schedule[thresholds[index - 1]] if index else 0
        return self.max_draft_len


def check_draft_limits(max_draft_len: int, max_concurrency: int | None,
                       draft_len_schedule: dict[int, int] | None) -> None:
    """Raise ValueError naming the key when a limit cannot mean anything."""
    if max_concurrency is not None and max_concurrency < 1:
        raise ValueError(f"speculative_config.max_concurrency: must be >= 1, got {max_concurrency}")
    # TensorRT-LLM requires the schedule to hold batch size 1 at max_draft_len (llm_args.py,
    # DecodingBaseConfig.draft_len_schedule: "enforced to contain batch_size=1 and its according
    # draft_len equals max_draft_len"); both engines check it, so the CPU engine runs what a GPU would.
    if draft_len_schedule is not None and draft_len_schedule.get(1) != max_draft_len:
        raise ValueError(f"speculative_config.draft_len_schedule: must map batch size 1 to max_draft_len "
                         f"({max_draft_len}), got {draft_len_schedule.get(1)}")
    for batch_size, draft_len in (draft_len_schedule or {}).items():
        if batch_size < 1 or not 0 <= draft_len <= max_draft_len:
            raise ValueError(
                f"speculative_config.draft_len_schedule: {batch_size}: {draft_len} must map a batch size "
                f">= 1 to a draft length 0..max_draft_len ({max_draft_len})")
