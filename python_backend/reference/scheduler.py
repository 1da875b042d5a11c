"""In-flight batching: who runs this step, and when a request is done.

Requests join between steps while the batch has room (max_batch_size) and the
step's token budget (max_num_tokens: prompt tokens of new requests + K+1 per
running request) allows; they leave as soon as they finish or are aborted.
"""
from __future__ import annotations

from collections import deque

from python_backend.reference.sequence import SequenceState


class Scheduler:
    def __init__(self, max_batch_size: int, max_num_tokens: int, max_seq_len: int, draft_len: int):
        self.max_batch_size = max_batch_size
        self.max_num_tokens = max_num_tokens
        self.max_seq_len = max_seq_len
        self.draft_len = draft_len
        self.waiting: deque[SequenceState] = deque()
        self.running: list[SequenceState] = []

    @property
    def num_active(self) -> int:
        return len(self.waiting) + len(self.running)

    def add(self, seq: SequenceState) -> None:
        self.waiting.append(seq)

    def remove(self, request_id: int) -> SequenceState | None:
        for seq in self.running:
            if seq.request_id == request_id:
                self.running.remove(seq)
                return seq
        for seq in self.waiting:
            if seq.request_id == request_id:
                self.waiting.remove(seq)
                return seq
        return None

    def schedule(self) -> tuple[list[SequenceState], list[SequenceState]]:
        """(new sequences to prefill, running sequences to decode) for the next step."""
        decode = [seq for seq in self.running if seq.prefilled]
        budget = len(decode) * (1 + self.draft_len)
        prefill: list[SequenceState] = []
        while self.waiting and len(self.running) < self.max_batch_size:
            prompt_len = len(self.waiting[0].prompt_ids)
            if budget + prompt_len > self.max_num_tokens and (decode or prefill):
                break
            seq = self.waiting.popleft()
            self.running.append(seq)
            prefill.append(seq)
            budget += prompt_len
        return prefill, decode

    def record(self, seq: SequenceState, new_tokens: list[int]) -> list[int]:
        """Append a step's tokens under the stop rules; return the tokens to emit."""
        params = seq.params
        emitted: list[int] = []
        for token in new_tokens:
            may_stop = len(seq.output_ids) >= params.min_tokens
            if may_stop and ((token == seq.end_id and not params.ignore_eos) or token in params.stop_token_ids):
                seq.finish_reason = "stop"
                break
            seq.output_ids.append(token)
            emitted.append(token)
            if len(seq.output_ids) >= params.max_tokens or seq.num_tokens >= self.max_seq_len:
                seq.finish_reason = "length"
                break
        if seq.finish_reason is None:
            seq.pending_token = new_tokens[-1]
        else:
            self.remove(seq.request_id)
        return emitted
