"""The engine protocol both engines speak (shape of TensorRT-LLM's LLM API).

`engine.generate_async(prompt_token_ids, sampling_params, streaming=True)` returns
a `GenerationResult`: async-iterate it for one `StepOutput` per engine step
(all tokens that step produced, several when drafts were accepted), the last
one carrying `finish_reason`; `abort()` cancels. The Triton model only sees
these types, so it never asks which engine it runs.
"""
from __future__ import annotations

import asyncio
from collections import deque
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
    """A `GenerationResult` fed from an engine thread, read on the consumer's event loop.

    The engine thread calls `push()` or `push_many()` (thread-safe): the step is queued at once and
    the event loop is woken only when the consumer waits for it, so a consumer that batches
    responses (`wait_steps`, python_backend/coalescing.py) costs one wake-up per batch, not one per
    engine step. With streaming off, steps are merged into one final StepOutput.
    """

    def __init__(self, request_id: int, loop: asyncio.AbstractEventLoop, streaming: bool, on_abort):
        self.request_id = request_id
        self._loop = loop
        self._steps: deque[StepOutput] = deque()   # appended by the engine thread, popped on the loop
        self._tokens_pushed = 0
        self._tokens_taken = 0
        self._final_pushed = False
        self._waiter: asyncio.Future | None = None   # the consumer waits for: any step, a final
        self._wake_on_any = False                    # step, or `_wake_tokens` tokens
        self._wake_tokens = 0
        self._streaming = streaming
        self._on_abort = on_abort
        self.finished = False

    # -- the engine thread -------------------------------------------------------------
    def push(self, step: StepOutput) -> None:
        if self._append(step):
            self._loop.call_soon_threadsafe(self._wake)

    @staticmethod
    def push_many(items: Sequence[tuple["QueueResult", StepOutput]]) -> None:
        """Push one engine iteration's steps; one wake-up per event loop at most."""
        to_wake: dict[asyncio.AbstractEventLoop, list[QueueResult]] = {}
        for result, step in items:
            if result._append(step):
                to_wake.setdefault(result._loop, []).append(result)
        for loop, results in to_wake.items():
            loop.call_soon_threadsafe(QueueResult._wake_all, results)

    def _append(self, step: StepOutput) -> bool:
        """Queue a step; True when the consumer is waiting for it."""
        self._tokens_pushed += len(step.token_ids_diff)
        self._steps.append(step)
        if step.finished:
            self._final_pushed = True
        return self._waiter is not None and self._ready()

    # -- the consumer's event loop -----------------------------------------------------------
    @staticmethod
    def _wake_all(results: list["QueueResult"]) -> None:
        for result in results:
            result._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _ready(self) -> bool:
        return (self._final_pushed and not self.finished
                or self._wake_on_any and bool(self._steps)
                or bool(self._wake_tokens) and self._tokens_pushed - self._tokens_taken >= self._wake_tokens)

    async def _wait(self, on_any: bool, tokens: int = 0, timeout_s: float | None = None) -> None:
        # the waiter is set before the check: a step pushed after the check sees it and wakes us
        self._waiter, self._wake_on_any, self._wake_tokens = self._loop.create_future(), on_any, tokens
        timer = None
        try:
            if self._ready():
                return
            if timeout_s is not None:
                timer = self._loop.call_later(timeout_s, self._wake)
            await self._waiter
        finally:
            self._waiter, self._wake_on_any, self._wake_tokens = None, False, 0
            if timer is not None:
                timer.cancel()

    def _take(self) -> StepOutput:
        step = self._steps.popleft()
        self._tokens_taken += len(step.token_ids_diff)
        if step.finished:
            self.finished = True
        return step

    async def wait_steps(self, timeout_s: float, max_tokens: int = 0) -> list[StepOutput]:
        """Wait `timeout_s` (less once a final step, or `max_tokens` tokens when > 0, are queued),
        then take every queued step, in order."""
        if timeout_s > 0:
            await self._wait(on_any=False, tokens=max_tokens, timeout_s=timeout_s)
        taken = []
        while self._steps and not self.finished:
            taken.append(self._take())
        return taken

    def abort(self) -> None:
        self._on_abort(self.request_id)

    async def __aiter__(self) -> AsyncIterator[StepOutput]:
        merged: list[int] = []
        while not self.finished:
            while not self._steps:
                await self._wait(on_any=True)
            step = self._take()
            if self._streaming:
                yield step
            else:
                merged.extend(step.token_ids_diff)
            if step.finished and not self._streaming:
                yield StepOutput(merged, step.finish_reason, step.stats, step.timing, step.error)
