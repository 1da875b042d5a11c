"""Fewer, fuller responses: merge a request's engine steps into at most one response per interval.

Every streamed response costs Python time in the engine model, in Triton and in postprocessing,
whatever it carries; at B200 pace (a step every ~4 ms, 2-3 tokens each) that cost, not the GPU,
sets the speed (docs/deploy-b200.md, "Will the serving layer keep up"). TensorRT-LLM's own answer is
`stream_interval`, "the iteration interval to create responses under the streaming mode ... helps
reduce the streaming overhead", default 1 (NVIDIA/TensorRT-LLM tensorrt_llm/llmapi/llm_args.py,
TorchLlmArgs, commit 00043967); ours is counted in milliseconds, so it means the same at any engine
pace:

- the first step goes out at once (time to first token does not change), and so does the final one;
- a step within `interval_s` of the request's previous response waits, merged with the steps after it,
  until the interval has passed (a timer sends it then, even if the engine has nothing new);
- `max_tokens` (0 = no limit) sends early once that many tokens are waiting.

Tokens are only grouped, never changed, so the text is identical with coalescing on or off.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import AsyncIterator, Mapping

from python_backend.protocol import StepOutput

DEFAULT_INTERVAL_MS = 20.0
DEFAULT_MAX_TOKENS = 0


@dataclass(frozen=True)
class StreamInterval:
    interval_s: float = DEFAULT_INTERVAL_MS / 1000.0
    max_tokens: int = DEFAULT_MAX_TOKENS

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Mapping[str, str]]) -> "StreamInterval":
        """From the model config's `parameters` (`stream_interval_ms`, `stream_interval_max_tokens`)."""
        def number(key: str, default: float, kind):
            text = parameters.get(key, {}).get("string_value", "")
            try:
                value = kind(text) if text.strip() else default
            except ValueError:
                raise ValueError(f"parameters.{key}: must be a number, got {text!r}") from None
            if value < 0:
                raise ValueError(f"parameters.{key}: must be >= 0 (0 = off), got {text!r}")
            return value

        return cls(number("stream_interval_ms", DEFAULT_INTERVAL_MS, float) / 1000.0,
                   number("stream_interval_max_tokens", DEFAULT_MAX_TOKENS, int))

    @property
    def enabled(self) -> bool:
        return self.interval_s > 0


def merge(held: StepOutput, step: StepOutput) -> StepOutput:
    """Two consecutive steps as one: all tokens; the later step's finish, stats and timing."""
    return StepOutput(held.token_ids_diff + list(step.token_ids_diff), step.finish_reason, step.stats,
                      step.timing, step.error)


class CoalescedSteps:
    """Async-iterates a request's engine steps, merged per `StreamInterval` (see the module doc).

    A result that queues steps on this loop (`QueueResult.wait_steps`: the reference and simulated
    engines) is read with one timer per response; any other async-iterable result (the trtllm
    adapter) with a fetch task per held step, which is correct but costs more CPU per step.
    """

    def __init__(self, result, interval: StreamInterval):
        self._result = result
        self._steps: AsyncIterator[StepOutput] = aiter(result)
        self._interval = interval
        self._batched = hasattr(result, "wait_steps")
        self._loop = asyncio.get_running_loop()
        self._last_sent: float | None = None
        self._next: asyncio.Task | None = None   # a fetch still running when a timer sent the held steps

    def __aiter__(self) -> "CoalescedSteps":
        return self

    def _send(self, step: StepOutput) -> StepOutput:
        self._last_sent = self._loop.time()
        return step

    async def __anext__(self) -> StepOutput:
        if self._batched:
            return await self._next_batched()
        return await self._next_fetching()

    async def _next_batched(self) -> StepOutput:
        interval = self._interval
        if self._last_sent is None or not interval.enabled:
            return self._send(await anext(self._steps))
        # sleep through the rest of the interval (no wake-up per engine step), then take it all
        wait_s = self._last_sent + interval.interval_s - self._loop.time()
        held = await self._result.wait_steps(wait_s, interval.max_tokens)
        if not held:   # nothing came within the interval: the next step goes out as soon as it comes
            held = [await anext(self._steps)]
            held += await self._result.wait_steps(0)
        step = held[0]
        for later in held[1:]:
            step = merge(step, later)
        return self._send(step)

    async def _fetch(self) -> StepOutput | None:
        try:
            return await anext(self._steps)
        except StopAsyncIteration:
            return None

    async def _take(self) -> StepOutput | None:
        """The next step; a fetch left running by a timer is awaited without being cancelled."""
        if self._next is None:
            return await self._fetch()
        task, self._next = self._next, None
        await asyncio.wait({task})
        return task.result()

    async def _next_fetching(self) -> StepOutput:
        interval = self._interval
        held: StepOutput | None = None
        while True:
            if held is not None:
                wait_s = self._last_sent + interval.interval_s - self._loop.time()
                if wait_s <= 0 or (interval.max_tokens and len(held.token_ids_diff) >= interval.max_tokens):
                    return self._send(held)
                if self._next is None:
                    self._next = self._loop.create_task(self._fetch())
                done, _ = await asyncio.wait({self._next}, timeout=wait_s)
                if not done:
                    return self._send(held)
            step = await self._take()
            if step is None:
                if held is not None:
                    return self._send(held)
                raise StopAsyncIteration
            held = step if held is None else merge(held, step)
            if held.finished or self._last_sent is None or not interval.enabled:
                return self._send(held)

    def close(self) -> None:
        """Drop a fetch still running (the request ended without reading it)."""
        if self._next is not None:
            self._next.cancel()
            self._next = None
