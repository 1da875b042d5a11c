"""Failing well, against a real tritonserver: a bounded queue with a busy answer, one request's
failure isolated, a drain on stop, and a dead or stalled engine taking the server out of service.

Servers here use a small repository (tests/fail_well_repository.py): max_batch_size 3,
max_queue_size 1, and the reference engine's test-only fault injection (faults.py), which
picks the misbehaving request by its random_seed.
"""
from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest

from fail_well_repository import write_repository
from python_backend.admission import BUSY_PREFIX
from python_backend.reference.faults import FAULTS_ENV
from triton_eagle.tritonserver import DRAIN_SETTLE_S, STOP_GRACE_S, TritonServer
from triton_server import Stream, is_final, metric, scalar, start_server, wait_for

pytestmark = pytest.mark.triton

MODEL = "tensorrt_llm"
MAX_BATCH_SIZE, MAX_QUEUE_SIZE = 3, 1
FAIL_SEED, KILL_SEED, STALL_SEED = 7001, 7002, 7003
FAULTS = f"fail-request={FAIL_SEED},kill-engine={KILL_SEED},stall-engine={STALL_SEED}"
DRAIN_TIMEOUT_S, EXIT_TIMEOUT_S = 8.0, 5
TRITON_STOPPING = "Server is stopping"   # tritonserver's own refusal while it exits
PROMPT = np.array([[1, 9690, 198, 19556, 253, 1345, 2]], dtype=np.int32)   # a short chat turn


@contextmanager
def faults_on():
    """The fault-injection variable in the environment a server started now inherits."""
    previous = os.environ.get(FAULTS_ENV)
    os.environ[FAULTS_ENV] = FAULTS
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(FAULTS_ENV, None)
        else:
            os.environ[FAULTS_ENV] = previous


def start(tmp_path_factory, name: str, models=None, **engine_overrides) -> TritonServer:
    repository = write_repository(tmp_path_factory.mktemp(name) / "repository", max_batch_size=MAX_BATCH_SIZE,
                                  max_queue_size=MAX_QUEUE_SIZE, **engine_overrides)
    with faults_on():
        server = start_server(repository, models=models, exit_timeout_s=EXIT_TIMEOUT_S, name=name,
                              drain_timeout_s=DRAIN_TIMEOUT_S)
    return server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    started = start(tmp_path_factory, "fail-well")
    try:
        yield started
    finally:
        started.stop()


def engine_inputs(tokens: int, seed: int | None = None) -> dict:
    """A greedy request that runs exactly `tokens` tokens (min_length holds end-of-text back)."""
    inputs = {"input_ids": PROMPT, "request_output_len": scalar(tokens, np.int32),
              "min_length": scalar(tokens, np.int32), "streaming": scalar(True, bool)}
    if seed is not None:
        inputs["random_seed"] = scalar(seed, np.uint64)
    return inputs


def open_stream(server, inputs: dict, model: str = MODEL) -> Stream:
    stream = Stream(server)
    stream.send(model, inputs)
    return stream


def tokens_of(responses) -> list[int]:
    return [t for item in responses for t in item.as_numpy("output_ids").reshape(-1).tolist()]


def finish_reason(result) -> str:
    return result.as_numpy("finish_reason").reshape(-1)[0].decode()


def ok(responses) -> list:
    errors = [item for item in responses if isinstance(item, Exception)]
    assert not errors, errors
    return responses


def test_a_request_beyond_the_queue_is_refused_at_once_as_busy_and_the_admitted_ones_complete(server):
    refused_before = metric(server, "triton_eagle_refused_total", reason="busy")
    queued_before = metric(server, "triton_eagle_queue_time_seconds_count")
    admitted = [open_stream(server, engine_inputs(24)) for _ in range(MAX_BATCH_SIZE + MAX_QUEUE_SIZE)]
    extra = Stream(server)
    try:
        assert wait_for(lambda: metric(server, "triton_eagle_active_requests") == MAX_BATCH_SIZE + MAX_QUEUE_SIZE)
        assert metric(server, "triton_eagle_queue_depth") == MAX_QUEUE_SIZE
        sent = time.monotonic()
        extra.send(MODEL, engine_inputs(4))
        answer = extra.until_final(timeout_s=30)
        refused_s = time.monotonic() - sent
        assert len(answer) == 1 and isinstance(answer[0], Exception), answer
        assert str(answer[0].message()).startswith(BUSY_PREFIX), answer[0]
        assert refused_s < 2.0, f"the busy answer took {refused_s:.1f} s"
        for stream in admitted:
            responses = ok(stream.until_final())
            assert finish_reason(responses[-1]) == "length" and len(tokens_of(responses)) == 24
    finally:
        for stream in admitted + [extra]:
            stream.close()
    assert metric(server, "triton_eagle_refused_total", reason="busy") == refused_before + 1
    # every admitted request's time to first token was split into queue and prefill time
    assert metric(server, "triton_eagle_queue_time_seconds_count") == queued_before + len(admitted)
    assert metric(server, "triton_eagle_prefill_time_seconds_count") >= len(admitted)
    assert wait_for(lambda: metric(server, "triton_eagle_queue_depth") == 0)


def test_the_openai_api_answers_a_full_server_with_503_busy_and_retry_after(server):
    import openai

    from triton_eagle.openai_api.process import OpenAIServer
    from triton_eagle.tritonserver import free_port

    admitted = []
    try:
        with OpenAIServer(server.grpc_url, free_port()) as api, \
                openai.OpenAI(base_url=api.base_url, api_key="unused", max_retries=0) as client:
            admitted = [open_stream(server, engine_inputs(64)) for _ in range(MAX_BATCH_SIZE + MAX_QUEUE_SIZE)]
            assert wait_for(lambda: metric(server, "triton_eagle_active_requests") == MAX_BATCH_SIZE + MAX_QUEUE_SIZE)
            with pytest.raises(openai.APIStatusError) as raised:
                client.chat.completions.create(model="ensemble", max_tokens=4,
                                               messages=[{"role": "user", "content": "Hi"}])
            assert raised.value.status_code == 503
            assert raised.value.response.headers.get("retry-after") == "1"
            assert BUSY_PREFIX in raised.value.message
        for stream in admitted:
            assert len(tokens_of(ok(stream.until_final()))) == 64
    finally:
        for stream in admitted:
            stream.close()


def test_one_failing_request_ends_with_an_error_and_the_others_complete_with_the_same_text(server):
    alone = open_stream(server, engine_inputs(16))
    try:
        expected = tokens_of(ok(alone.until_final()))
    finally:
        alone.close()
    survivor = open_stream(server, engine_inputs(16))
    failing = Stream(server)
    try:
        first = survivor.next()
        assert not isinstance(first, Exception)   # decoding now: the failing request joins its batch
        failing.send(MODEL, engine_inputs(16, seed=FAIL_SEED))
        answer = failing.until_final(timeout_s=60)
        assert len(answer) == 1 and isinstance(answer[0], Exception)
        assert "injected failure" in str(answer[0])
        rest = ok(survivor.until_final())
    finally:
        survivor.close()
        failing.close()
    assert tokens_of([first] + rest) == expected
    assert finish_reason(rest[-1]) == "length"
    # the failure happened in a shared step, and was isolated by retrying each request alone
    assert "retrying each alone" in server.log_path.read_text()
    assert server.is_ready()


def test_stop_drains_refuses_new_requests_as_busy_and_ends_the_rest_with_a_reason(server):
    """Runs last on the module's server: it stops it."""
    long_direct = open_stream(server, engine_inputs(1500))
    long_ensemble = open_stream(server, {"text_input": np.array([["Tell me a long story."]], dtype=object),
                                         "max_tokens": scalar(1500, np.int32), "min_length": scalar(1500, np.int32),
                                         "stream": scalar(True, bool)}, model="ensemble")
    for stream in (long_direct, long_ensemble):
        assert not isinstance(stream.next(), Exception)   # generating
    short = open_stream(server, engine_inputs(2))
    short_first = short.next()   # prefilled: one decode step from done
    assert not isinstance(short_first, Exception) and not is_final(short_first)
    regions = set(server.owned_shm_regions)
    started = time.monotonic()
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    late = Stream(server)
    try:
        assert wait_for(lambda: not server.is_ready(), timeout_s=5), "still ready while draining"
        late.send(MODEL, engine_inputs(4))
        late_answer = late.until_final(timeout_s=10)
        # refused by the draining model, or by tritonserver itself once it has stopped the model's scheduler
        assert isinstance(late_answer[-1], Exception), late_answer
        assert BUSY_PREFIX in str(late_answer[-1]) or TRITON_STOPPING in str(late_answer[-1]), late_answer
        # a request already running finishes within the drain
        assert finish_reason(ok(short.until_final(timeout_s=DRAIN_TIMEOUT_S + 5))[-1]) == "length"
        # the ones still running at the drain timeout end with a final response saying so
        for stream in (long_direct, long_ensemble):
            responses = ok(stream.until_final(timeout_s=DRAIN_TIMEOUT_S + 10))
            assert is_final(responses[-1]) and finish_reason(responses[-1]) == "cancelled"
            assert len(responses) > 2   # tokens came before it
    finally:
        for stream in (long_direct, long_ensemble, short, late):
            stream.close()
        stopper.join()
    assert f"cancelled: server shutting down; the drain timeout ({DRAIN_TIMEOUT_S:g} s) passed" in server.log_path.read_text()
    stop_s = time.monotonic() - started
    assert stop_s <= DRAIN_TIMEOUT_S + DRAIN_SETTLE_S + EXIT_TIMEOUT_S + STOP_GRACE_S, f"stop took {stop_s:.1f} s"
    assert regions and not [path for path in regions if os.path.exists(path)]


@pytest.mark.parametrize("seed,reason", [(KILL_SEED, "the engine thread died"), (STALL_SEED, "stalled")],
                         ids=["dead-engine", "stalled-engine"])
def test_a_failed_engine_ends_every_request_with_an_error_and_the_server_goes_not_ready(
        tmp_path_factory, seed, reason):
    server = start(tmp_path_factory, f"engine-{seed}", models=[MODEL], watchdog_timeout_s=3.0)
    running = open_stream(server, engine_inputs(1500))
    fatal = Stream(server)
    try:
        assert not isinstance(running.next(), Exception)
        fatal.send(MODEL, engine_inputs(8, seed=seed))
        # the running request had tokens out: it ends with an error, by response or by finish_reason
        final = running.until_final(timeout_s=60)[-1]
        assert isinstance(final, Exception) or finish_reason(final) == "error", final
        answer = fatal.until_final(timeout_s=60)
        assert len(answer) == 1 and isinstance(answer[0], Exception) and reason in str(answer[0]), answer
        assert wait_for(lambda: not server.is_ready(), timeout_s=15), "still ready with a failed engine"
        running.close()
        fatal.close()
        assert wait_for(lambda: not server.running(), timeout_s=EXIT_TIMEOUT_S + STOP_GRACE_S + 15)
        log = server.log_path.read_text()
        assert "the engine failed" in log and reason in log
    finally:
        running.close()
        fatal.close()
        server.stop()
