"""Response coalescing (python_backend/coalescing.py): the first and final steps go at once, the
steps between are merged into at most one response per interval, tokens never change."""
from __future__ import annotations

import asyncio

import pytest

from python_backend.coalescing import CoalescedSteps, StreamInterval
from python_backend.protocol import QueueResult, StepOutput


async def paced_steps(pace_s: float, count: int, tokens_per_step: int = 2):
    for index in range(count):
        await asyncio.sleep(pace_s)
        yield StepOutput(list(range(index * tokens_per_step, (index + 1) * tokens_per_step)),
                         "length" if index == count - 1 else None)


class Engine:
    """Steps at a fixed pace, as an async generator (any result) or pushed into a QueueResult."""

    def __init__(self, pace_s: float, count: int, stall_after: int | None):
        self.pace_s, self.count, self.stall_after = pace_s, count, stall_after

    async def steps(self):
        async for step in paced_steps(self.pace_s, self.count):
            yield step
            if self.stall_after is not None and step.token_ids_diff[0] == 2 * self.stall_after:
                await asyncio.sleep(0.3)   # the engine has nothing for a while

    def result(self, queued: bool):
        if not queued:
            return self.steps()
        result = QueueResult(1, asyncio.get_running_loop(), True, on_abort=None)

        async def feed():
            async for step in self.steps():
                result.push(step)
        asyncio.get_running_loop().create_task(feed())
        return result


@pytest.fixture(params=["queued", "any-async-iterable"])
def collect(request):
    def run(interval: StreamInterval, pace_s: float, count: int, stall_after: int | None = None):
        async def main():
            loop = asyncio.get_running_loop()
            started = loop.time()
            sent = []
            result = Engine(pace_s, count, stall_after).result(request.param == "queued")
            async for step in CoalescedSteps(result, interval):
                sent.append((loop.time() - started, step))
                if step.finished:
                    break
            return sent
        return asyncio.run(main())
    return run


def test_steps_are_merged_into_one_response_per_interval_and_tokens_are_kept(collect):
    sent = collect(StreamInterval(interval_s=0.05), pace_s=0.005, count=60)
    tokens = [t for _, step in sent for t in step.token_ids_diff]
    assert tokens == list(range(120))
    assert len(sent[0][1].token_ids_diff) == 2            # the first step went out alone, at once
    assert sent[-1][1].finish_reason == "length"
    assert len(sent) <= 60 * 0.005 / 0.05 + 3              # ~one per 50 ms, not one per 5 ms step
    gaps = [b - a for (a, _), (b, _) in zip(sent, sent[1:-1])]
    assert min(gaps) >= 0.045


def test_held_tokens_are_sent_when_the_interval_ends_even_if_the_engine_stalls(collect):
    sent = collect(StreamInterval(interval_s=0.05), pace_s=0.005, count=12, stall_after=5)
    stall_sends = [at for at, step in sent if step.token_ids_diff[-1] == 11]
    assert stall_sends and stall_sends[0] < 0.05 + 6 * 0.005 + 0.1   # not after the 0.3 s stall


def test_max_tokens_sends_early(collect):
    sent = collect(StreamInterval(interval_s=10.0, max_tokens=6), pace_s=0.002, count=30)
    assert [len(step.token_ids_diff) for _, step in sent[1:-1]] == [6] * (len(sent) - 2)
    assert sent[-1][0] < 1.0   # and the final step at once, not after the 10 s interval


def test_interval_zero_sends_every_step(collect):
    sent = collect(StreamInterval(interval_s=0.0), pace_s=0.001, count=20)
    assert len(sent) == 20


@pytest.mark.parametrize("parameters, expected", [
    ({}, StreamInterval(0.02, 0)),
    ({"stream_interval_ms": {"string_value": "0"}}, StreamInterval(0.0, 0)),
    ({"stream_interval_ms": {"string_value": "50"}, "stream_interval_max_tokens": {"string_value": "16"}},
     StreamInterval(0.05, 16)),
])
def test_model_config_parameters(parameters, expected):
    assert StreamInterval.from_parameters(parameters) == expected


@pytest.mark.parametrize("value", ["-1", "soon"])
def test_bad_parameter_is_refused_naming_it(value):
    with pytest.raises(ValueError, match="parameters.stream_interval_ms"):
        StreamInterval.from_parameters({"stream_interval_ms": {"string_value": value}})
