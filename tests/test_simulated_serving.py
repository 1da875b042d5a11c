"""The Triton path at SIMULATED B200 pace (engine: simulated, gpt-oss-120b 8xB200 profile): response
coalescing keeps every text exact, streams stay in order at concurrency 128 with detokenization spread
over two postprocessing instances, the engine model's text form answers as the ensemble does,
cancellation still frees the engine slot at once."""
from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from python_backend.simulated.repository import write_simulated_repository
from triton_eagle.client import grpc_inputs, request_fields
from triton_eagle.process_cpu import cpu_seconds, server_processes
from triton_eagle.prompts import mtbench_questions
from triton_server import Stream, is_final, metric, start_server, wait_for

PROFILE = "gpt-oss-120b-8xb200"


@pytest.fixture(scope="module")
def questions():
    return [q.text for q in mtbench_questions()]


async def generate(url: str, text: str, stream: bool, max_tokens: int = 4096, model: str = "ensemble") -> dict:
    """One request through the ensemble (or the text form of `tensorrt_llm`): every response's answer
    and reasoning delta."""
    import tritonclient.grpc.aio as grpcclient

    done = asyncio.Event()
    inputs = grpc_inputs(request_fields(text, max_tokens=max_tokens, stream=stream))

    async def requests():
        yield {"model_name": model, "inputs": inputs}
        await done.wait()

    seen = {"text": [], "reasoning": [], "finish_reason": ""}
    async with grpcclient.InferenceServerClient(url) as client:
        responses = client.stream_infer(requests())
        try:
            async for result, error in responses:
                assert error is None, error
                seen["text"].append(result.as_numpy("text_output").reshape(-1)[0].decode())
                seen["reasoning"].append(result.as_numpy("reasoning_output").reshape(-1)[0].decode())
                seen["finish_reason"] = result.as_numpy("finish_reason").reshape(-1)[0].decode()
                if seen["finish_reason"]:
                    break
        finally:
            done.set()
            responses.cancel()
    return seen


def run_all(url: str, texts: list[str], stream: bool, model: str = "ensemble") -> list[dict]:
    async def all_of():
        return await asyncio.gather(*(generate(url, text, stream, model=model) for text in texts))
    return asyncio.run(all_of())


@pytest.fixture(scope="module")
def coalescing_off_texts(tmp_path_factory, questions):
    """Streamed answers with a response per engine step (stream_interval_ms 0), on their own server."""
    repository = write_simulated_repository(PROFILE, tmp_path_factory.mktemp("sim-off") / "repo",
                                            stream_interval_ms=0)
    server = start_server(repository, name="simulated-off")
    try:
        return run_all(server.grpc_url, questions[::10], stream=True)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory, coalescing_off_texts):
    """The repository as shipped (coalescing on by default), the simulated engine behind it."""
    server = start_server(write_simulated_repository(PROFILE, tmp_path_factory.mktemp("sim-on") / "repo"),
                          name="simulated-on")
    try:
        yield server
    finally:
        server.stop()


def test_greedy_text_is_identical_with_coalescing_on_and_off(server, questions, coalescing_off_texts):
    on = run_all(server.grpc_url, questions[::10], stream=True)
    whole = run_all(server.grpc_url, questions[::10], stream=False)
    for streamed_on, streamed_off, one_shot in zip(on, coalescing_off_texts, whole):
        assert "".join(streamed_on["text"]) == "".join(streamed_off["text"]) == one_shot["text"][0] != ""
        assert "".join(streamed_on["reasoning"]) == "".join(streamed_off["reasoning"]) == one_shot["reasoning"][0]
        assert streamed_on["finish_reason"] == streamed_off["finish_reason"] == "stop"
        # fewer, fuller responses: ~5 engine steps (4 ms each) per 20 ms interval
        assert len(streamed_on["text"]) * 2 < len(streamed_off["text"])


@pytest.fixture(scope="module")
def spread_server(tmp_path_factory, server):
    """Detokenization over two postprocessing instances, responses in request order (preserve_ordering)."""
    repository = write_simulated_repository(PROFILE, tmp_path_factory.mktemp("sim-spread") / "repo",
                                            postprocessing_instances=2)
    spread = start_server(repository, name="simulated-spread")
    try:
        yield spread
    finally:
        spread.stop()


def test_at_concurrency_128_every_stream_keeps_order_and_exact_text(spread_server, questions):
    """Two postprocessing instances share every stream's responses; each delta still lands in order."""
    stubs = server_processes(spread_server.process.pid)["postprocessing"]
    assert len(stubs) == 2
    cpu_before = [cpu_seconds(pid) for pid in stubs]
    texts = [questions[i % len(questions)] for i in range(128)]
    streamed = run_all(spread_server.grpc_url, texts, stream=True)
    assert all(cpu_seconds(pid) > before for pid, before in zip(stubs, cpu_before))   # each instance worked
    distinct = sorted(set(texts))
    whole = dict(zip(distinct, run_all(spread_server.grpc_url, distinct, stream=False)))
    for text, seen in zip(texts, streamed):
        assert seen["finish_reason"] == "stop"
        assert "".join(seen["text"]) == whole[text]["text"][0]
        assert "".join(seen["reasoning"]) == whole[text]["reasoning"][0]


def test_text_form_of_the_engine_model_answers_as_the_ensemble(server, questions):
    """In-model detokenization: text in, text out of tensorrt_llm itself, identical to the ensemble."""
    texts = questions[::10]
    ensemble = run_all(server.grpc_url, texts, stream=False)
    streamed = run_all(server.grpc_url, texts, stream=True, model="tensorrt_llm")
    whole = run_all(server.grpc_url, texts, stream=False, model="tensorrt_llm")
    for through_ensemble, in_model_streamed, in_model_whole in zip(ensemble, streamed, whole):
        assert "".join(in_model_streamed["text"]) == in_model_whole["text"][0] == through_ensemble["text"][0] != ""
        assert ("".join(in_model_streamed["reasoning"]) == in_model_whole["reasoning"][0]
                == through_ensemble["reasoning"][0] != "")
        assert in_model_streamed["finish_reason"] == in_model_whole["finish_reason"] == "stop"
        assert len(in_model_streamed["text"]) > 2


def test_text_form_at_concurrency_128_keeps_order_and_exact_text(server, questions):
    texts = [questions[i % len(questions)] for i in range(128)]
    streamed = run_all(server.grpc_url, texts, stream=True, model="tensorrt_llm")
    distinct = sorted(set(texts))
    whole = dict(zip(distinct, run_all(server.grpc_url, distinct, stream=False, model="tensorrt_llm")))
    for text, seen in zip(texts, streamed):
        assert seen["finish_reason"] == "stop"
        assert "".join(seen["text"]) == whole[text]["text"][0]
        assert "".join(seen["reasoning"]) == whole[text]["reasoning"][0]


@pytest.mark.parametrize("inputs, message", [
    ({"text_input": np.array([[b""]], dtype=object)}, "text_input: must not be empty"),
    ({"input_ids": np.array([[1]], dtype=np.int32), "max_tokens": np.array([[8]], dtype=np.int32)},
     "max_tokens: an input of the text form"),
])
def test_text_form_refuses_bad_input_by_name(server, inputs, message):
    client = Stream(server)
    try:
        client.send("tensorrt_llm", inputs)
        error = client.next()
        assert isinstance(error, Exception) and message in str(error)
    finally:
        client.close()


@pytest.mark.parametrize("model", ["ensemble", "tensorrt_llm"])   # tensorrt_llm: its text form
def test_cancelled_stream_frees_the_engine_slot_within_a_second(server, questions, model):
    client = Stream(server)
    inputs = {name: np.array([[value.encode() if isinstance(value, str) else value]])
              for name, value in {"text_input": questions[0], "max_tokens": np.int32(60000),
                                  "min_tokens": np.int32(60000), "stream": True}.items()}
    inputs = {name: array.astype(object) if name == "text_input" else array for name, array in inputs.items()}
    client.send(model, inputs)
    for _ in range(3):
        response = client.next()
        assert not isinstance(response, Exception) and not is_final(response)
    assert metric(server, "triton_eagle_engine_active_requests") == 1
    cancelled_at = time.monotonic()
    client.close(cancel=True)
    assert wait_for(lambda: metric(server, "triton_eagle_engine_active_requests") == 0, timeout_s=5, interval_s=0.01)
    assert time.monotonic() - cancelled_at < 1.0
