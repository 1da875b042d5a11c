"""The engine protocol both engines speak (shape of TensorRT-LLM's LLM API).

`engine.generate_async(prompt_token_ids, sampling_params, streaming=True)` returns
a `GenerationResult`: async-iterate it for one `StepOutput` per engine step
(all tokens that step produced, several when drafts were accepted), the last
one carrying `finish_reason`; `abort()` cancels. The Triton model only sees
these types, so it never asks which engine it runs.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import AsyncIterator, Protocol, Sequence


class InvalidRequestError(ValueError):
    """A request the engine refuses; the message names the field and the fix."""


@dataclass(frozen=True)
class SamplingParams:
    """Per-request sampling, named as TensorRT-LLM's `SamplingParams` fields."""

    max_tokens: int = 64
    temperature: float = 0.0          # 0 = greedy
    top_k: int = 0                    # 0 = off
    top_p: float = 1.0
    seed: int | None = None
    end_id: int | None = None         # None = the model's eos id
    pad_id: int | None = None
    min_tokens: int = 0               # end_id / stop tokens suppressed before this many
    ignore_eos: bool = False
    stop_token_ids: tuple[int, ...] = ()
    # token sequences that must not be generated: the last token of a sequence is
    # banned wherever the tokens before it match (TensorRT-LLM's bad_words semantics)
    bad_words_ids: tuple[tuple[int, ...], ...] = ()
    return_perf_metrics: bool = True

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1

    def validate(self) -> None:
        if not 1 <= self.max_tokens:
            raise InvalidRequestError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if not self.temperature >= 0.0:
            raise InvalidRequestError(f"temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise InvalidRequestError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise InvalidRequestError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if self.min_tokens < 0:
            raise InvalidRequestError(f"min_tokens must be >= 0, got {self.min_tokens}")
        if any(len(words) == 0 for words in self.bad_words_ids):
            raise InvalidRequestError("bad_words: an entry tokenized to nothing")


@dataclass
class SpeculativeStats:
    """Counters of one request, as TRT-LLM's `request_perf_metrics.speculative_decoding`."""

    total_draft_tokens: int = 0            # draft tokens proposed to the target
    total_accepted_draft_tokens: int = 0   # of those, accepted by verification
    drafting_steps: int = 0                # engine steps that verified a draft
    generation_steps: int = 0              # engine steps that produced tokens (incl. prefill)
    output_tokens: int = 0

    @property
    def acceptance_length(self) -> float:
        """Mean tokens per drafting step = 1 + accepted / steps (the model cards' number)."""
        if self.drafting_steps == 0:
            return 1.0
        return 1.0 + self.total_accepted_draft_tokens / self.drafting_steps

    @property
    def acceptance_rate(self) -> float:
        if self.total_draft_tokens == 0:
            return 0.0
        return self.total_accepted_draft_tokens / self.total_draft_tokens


@dataclass
class TimingStats:
    """Wall-clock instants (time.monotonic seconds), as TRT-LLM's timing_metrics."""

    arrival_time: float = 0.0
    first_scheduled_time: float = 0.0
    first_token_time: float = 0.0
    last_token_time: float = 0.0


@dataclass
class StepOutput:
    """What one engine step produced for one request."""

    token_ids_diff: list[int]
    finish_reason: str | None = None       # None | "stop" | "length" | "cancelled" | "error"
    stats: SpeculativeStats = field(default_factory=SpeculativeStats)
    timing: TimingStats = field(default_factory=TimingStats)
    error: str | None = None               # set with finish_reason "error"

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


class GenerationResult(Protocol):
    request_id: int

    def __aiter__(self) -> AsyncIterator[StepOutput]: ...

    def abort(self) -> None: ...


class Engine(Protocol):
    """What the Triton model needs from an engine."""

    eos_token_id: int
    max_seq_len: int

    def generate_async(
        self,
        prompt_token_ids: Sequence[int],
        sampling_params: SamplingParams,
        streaming: bool = True,
    ) -> GenerationResult: ...

    def num_active_requests(self) -> int: ...

    def shutdown(self) -> None: ...


class QueueResult:
    """A `GenerationResult` fed from an engine thread through an asyncio queue.

    The engine thread calls `push()` (thread-safe); the consumer's event loop
    iterates. With streaming off, steps are merged into one final StepOutput.
    """

    def __init__(self, request_id: int, loop: asyncio.AbstractEventLoop, streaming: bool, on_abort):
        self.request_id = request_id
        self._loop = loop
        self._queue: asyncio.Queue[StepOutput] = asyncio.Queue()
        self._streaming = streaming
        self._on_abort = on_abort
        self.finished = False

    def push(self, step: StepOutput) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, step)

    @staticmethod
    def push_many(items: Sequence[tuple["QueueResult", StepOutput]]) -> None:
        """Push one engine iteration's steps with one wake-up per event loop (thread-safe)."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[QueueResult, StepOutput]]] = {}
        for result, step in items:
            by_loop.setdefault(result._loop, []).append((result, step))
        for loop, batch in by_loop.items():
            loop.call_soon_threadsafe(QueueResult._put_all, batch)

    @staticmethod
    def _put_all(batch: list[tuple["QueueResult", StepOutput]]) -> None:
        for result, step in batch:
            result._queue.put_nowait(step)

    def abort(self) -> None:
        self._on_abort(self.request_id)

    async def __aiter__(self) -> AsyncIterator[StepOutput]:
        merged: list[int] = []
        while True:
            step = await self._queue.get()
            if self._streaming:
                yield step
            else:
                merged.extend(step.token_ids_diff)
            if step.finished:
                self.finished = True
                if not self._streaming:
                    yield StepOutput(merged, step.finish_reason, step.stats, step.timing, step.error)
                return
