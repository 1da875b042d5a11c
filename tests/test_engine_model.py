"""The decoupled `tensorrt_llm` model, called directly over gRPC streaming on a real tritonserver."""
from __future__ import annotations

import uuid

import numpy as np
import pytest

from ensemble.detokenizer import context_window
from ensemble.tokenizer import load_tokenizer
from python_backend.config import load_engine_config
from triton_server import Stream, is_final, metric, scalar, wait_for

pytestmark = pytest.mark.triton

MODEL = "tensorrt_llm"


@pytest.fixture(scope="module")
def engine_config(triton_server):
    return load_engine_config(triton_server.model_repository / "tensorrt_llm" / "engine.yaml")


@pytest.fixture(scope="module")
def tokenizer(engine_config):
    return load_tokenizer(engine_config.tokenizer_dir)


@pytest.fixture(scope="module")
def prompt_ids(tokenizer) -> np.ndarray:
    ids = tokenizer.render_chat([{"role": "user", "content": "Write a short poem about the sea."}])
    return np.array([ids], dtype=np.int32)


@pytest.fixture
def stream(triton_server):
    opened = Stream(triton_server)
    yield opened
    opened.close()


def generate_inputs(prompt_ids: np.ndarray, output_len: int, streaming: bool = True, **extra) -> dict:
    inputs = {"input_ids": prompt_ids, "request_output_len": scalar(output_len, np.int32),
              "streaming": scalar(streaming, bool)}
    inputs.update(extra)
    return inputs


def outputs(result, name):
    return result.as_numpy(name)


def tokens_of(result) -> list[int]:
    return outputs(result, "output_ids").reshape(-1).tolist()


def value(result, name):
    return outputs(result, name).reshape(-1)[0]


def finish_reason(result) -> str:
    return value(result, "finish_reason").decode()


def run(stream: Stream, inputs: dict, request_id: str = "") -> list:
    stream.send(MODEL, inputs, request_id=request_id)
    responses = stream.until_final()
    errors = [item for item in responses if isinstance(item, Exception)]
    assert not errors, errors
    return responses


def test_tokens_stream_one_response_per_engine_step(stream, prompt_ids, engine_config):
    responses = run(stream, generate_inputs(prompt_ids, 16))
    final = responses[-1]
    assert is_final(final) and all(not is_final(item) for item in responses[:-1])
    per_response = [tokens_of(item) for item in responses]
    tokens = [t for chunk in per_response for t in chunk]
    assert finish_reason(final) in ("length", "stop")
    if finish_reason(final) == "length":
        assert len(tokens) == 16
    # each engine step yields 1 (prefill / plain decode) to K+1 (K accepted drafts) tokens
    assert all(1 <= len(chunk) <= engine_config.draft_len + 1 for chunk in per_response[:-1])
    accepted = int(value(final, "total_accepted_draft_tokens"))
    if accepted == 0:
        assert all(len(chunk) <= 1 for chunk in per_response)
    else:
        # one response per engine step: the prefill step, then one per drafting step
        drafting_steps = round(accepted / (float(value(final, "acceptance_length")) - 1.0))
        assert len(responses) == 1 + drafting_steps
        assert any(len(chunk) > 1 for chunk in per_response)
    # num_output_tokens is cumulative on every response
    counts = [int(value(item, "num_output_tokens")) for item in responses]
    assert counts == list(np.cumsum([len(chunk) for chunk in per_response]))


def test_final_response_carries_the_requests_stats(stream, prompt_ids, engine_config):
    request_uuid = uuid.uuid4().hex
    responses = run(stream, generate_inputs(prompt_ids, 16, request_uuid=scalar(request_uuid.encode(), object)))
    final = responses[-1]
    assert value(final, "request_uuid").decode() == request_uuid
    assert int(value(final, "num_input_tokens")) == prompt_ids.shape[1]
    assert int(value(final, "num_output_tokens")) == sum(len(tokens_of(item)) for item in responses)
    drafted, accepted = int(value(final, "total_draft_tokens")), int(value(final, "total_accepted_draft_tokens"))
    assert 0 <= accepted <= drafted
    if engine_config.draft_len:
        assert drafted > 0
        assert float(value(final, "acceptance_rate")) == pytest.approx(accepted / drafted, rel=1e-5)
    assert float(value(final, "acceptance_length")) >= 1.0
    assert all(finish_reason(item) == "" for item in responses[:-1])


def test_stream_equals_non_stream_for_greedy_decoding(stream, prompt_ids):
    streamed = [t for item in run(stream, generate_inputs(prompt_ids, 12)) for t in tokens_of(item)]
    single = run(stream, generate_inputs(prompt_ids, 12, streaming=False))
    assert len(single) == 1
    assert tokens_of(single[0]) == streamed


def test_context_ids_carry_the_tokens_before_each_response(stream, prompt_ids):
    stop_strings = ["never-seen-stop-string"]
    responses = run(stream, generate_inputs(prompt_ids, 16, stop_strings=np.array(
        [[text.encode() for text in stop_strings]], dtype=object)))
    window = context_window(stop_strings)
    before: list[int] = []
    for item in responses:
        assert outputs(item, "context_ids").reshape(-1).tolist() == before[-window:]
        assert [text.decode() for text in outputs(item, "stop_strings_out").reshape(-1)] == stop_strings
        before += tokens_of(item)


def test_stop_string_ends_the_stream_at_the_token_completing_it(stream, prompt_ids, tokenizer):
    free_run = [t for item in run(stream, generate_inputs(prompt_ids, 16)) for t in tokens_of(item)]
    text = tokenizer.decode(free_run)
    # a stop string taken from the middle of the model's own greedy answer
    assert len(text) >= 16, text
    stop_string = text[len(text) // 2:len(text) // 2 + 4]
    responses = run(stream, generate_inputs(prompt_ids, 16, stop_strings=np.array([[stop_string.encode()]],
                                                                                     dtype=object)))
    stopped = [t for item in responses for t in tokens_of(item)]
    assert finish_reason(responses[-1]) == "stop"
    assert stopped == free_run[:len(stopped)]
    assert stop_string in tokenizer.decode(stopped)
    assert stop_string not in tokenizer.decode(stopped[:-1])


def test_cancelled_stream_frees_its_slot_and_the_next_request_runs(triton_server, prompt_ids):
    cancelled_before = metric(triton_server, "triton_eagle_requests_total", finish_reason="cancelled")
    stream = Stream(triton_server)
    stream.send(MODEL, generate_inputs(prompt_ids, 1500))
    for _ in range(3):   # generation is under way
        assert not isinstance(stream.next(), Exception)
    assert metric(triton_server, "triton_eagle_active_requests") >= 1
    stream.close(cancel=True)
    assert wait_for(lambda: metric(triton_server, "triton_eagle_active_requests") == 0
                    and metric(triton_server, "triton_eagle_engine_active_requests") == 0, timeout_s=10)
    assert metric(triton_server, "triton_eagle_requests_total", finish_reason="cancelled") == cancelled_before + 1
    follow_up = Stream(triton_server)
    try:
        responses = run(follow_up, generate_inputs(prompt_ids, 4))
        assert finish_reason(responses[-1]) in ("length", "stop")
    finally:
        follow_up.close()


def test_stop_form_aborts_a_running_request(triton_server, stream, prompt_ids):
    request_uuid = uuid.uuid4().hex
    stream.send(MODEL, generate_inputs(prompt_ids, 1500, request_uuid=scalar(request_uuid.encode(), object)))
    for _ in range(2):
        assert not isinstance(stream.next(), Exception)
    stopper = Stream(triton_server)
    try:
        stop_answer = run(stopper, {"stop": scalar(True, bool),
                                    "request_uuid": scalar(request_uuid.encode(), object)})
    finally:
        stopper.close()
    assert len(stop_answer) == 1 and tokens_of(stop_answer[0]) == []
    rest = stream.until_final(timeout_s=30)
    assert finish_reason(rest[-1]) == "cancelled"
    assert int(value(rest[-1], "num_output_tokens")) < 1500
    assert wait_for(lambda: metric(triton_server, "triton_eagle_active_requests") == 0, timeout_s=10)


def test_stop_form_finds_a_direct_clients_request_by_its_triton_request_id(triton_server, stream, prompt_ids):
    request_id = f"client-{uuid.uuid4().hex[:8]}"
    stream.send(MODEL, generate_inputs(prompt_ids, 1500), request_id=request_id)
    assert not isinstance(stream.next(), Exception)
    stopper = Stream(triton_server)
    try:
        run(stopper, {"stop": scalar(True, bool)}, request_id=request_id)
    finally:
        stopper.close()
    assert finish_reason(stream.until_final(timeout_s=30)[-1]) == "cancelled"


@pytest.mark.parametrize("overrides,expected", [
    ({"request_output_len": scalar(0, np.int32)}, "request_output_len must be 1.."),
    ({"request_output_len": scalar(-5, np.int32)}, "request_output_len must be 1.."),
    ({"request_output_len": scalar(10**9, np.int32)}, "request_output_len must be 1.."),
    ({"temperature": scalar(-0.1, np.float32)}, "temperature must be >= 0"),
    ({"runtime_top_p": scalar(1.5, np.float32)}, "runtime_top_p must be in (0, 1]"),
    ({"request_output_len": scalar(4.0, np.float32)}, "request_output_len"),   # Triton checks the dtype
    ({"input_ids": np.ones((1, 4000), dtype=np.int32)}, "input_ids: the prompt has 4000 tokens"),
    ({"input_ids": np.array([[1, 10**8]], dtype=np.int32)}, "input_ids: token id 100000000 is outside"),
], ids=["output-len-0", "output-len-negative", "output-len-huge", "temperature-negative", "top-p-above-1",
        "wrong-dtype", "prompt-too-long", "token-outside-vocab"])
def test_bad_inputs_get_an_error_naming_the_input_and_the_server_keeps_serving(
        triton_server, stream, prompt_ids, overrides, expected):
    inputs = generate_inputs(prompt_ids, 4)
    inputs.update(overrides)
    stream.send(MODEL, inputs)
    answer = stream.until_final(timeout_s=30)
    assert len(answer) == 1 and isinstance(answer[0], Exception), answer
    assert expected in str(answer[0])
    assert triton_server.is_ready()
    responses = run(stream, generate_inputs(prompt_ids, 2))
    assert sum(len(tokens_of(item)) for item in responses) >= 1


def test_metrics_count_requests_and_tokens(triton_server, stream, prompt_ids):
    # earlier tests' requests (cancelled, refused) are counted when released: let them settle first
    assert wait_for(lambda: metric(triton_server, "triton_eagle_active_requests") == 0)
    tokens_before = metric(triton_server, "triton_eagle_output_tokens_total")
    requests_before = metric(triton_server, "triton_eagle_requests_total")
    responses = run(stream, generate_inputs(prompt_ids, 8))
    produced = sum(len(tokens_of(item)) for item in responses)
    assert metric(triton_server, "triton_eagle_output_tokens_total") == tokens_before + produced
    # the request is counted when its slot is released, just after the final response went out
    assert wait_for(lambda: metric(triton_server, "triton_eagle_requests_total") == requests_before + 1)
    drafted = metric(triton_server, "triton_eagle_draft_tokens_total")
    assert metric(triton_server, "triton_eagle_accepted_draft_tokens_total") <= drafted
