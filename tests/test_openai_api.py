"""The OpenAI-compatible server end to end: the official `openai` client (sync and async,
streaming and not) -> our server (its own process) -> a real tritonserver with the ensemble."""
from __future__ import annotations

import asyncio
import time

import openai
import pytest

from triton_eagle.client import request_fields, stream_generate
from triton_eagle.openai_api.process import OpenAIServer
from triton_eagle.tritonserver import LOCAL_OPENER, free_port
from triton_server import metric, wait_for

pytestmark = pytest.mark.triton

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
MAX_TOKENS = 24
FREED_WITHIN_S = 1.0   # the bound; a quiet machine frees the slot in a few 30 ms engine steps
ABORT_STEPS = 4        # disconnect seen, stop form sent on the next step, engine drops it at the one after


@pytest.fixture(scope="module")
def api(triton_server):
    with OpenAIServer(triton_server.grpc_url, free_port(), metrics_url=triton_server.metrics_url,
                      served_model_name="smollm2") as server:
        yield server


@pytest.fixture(scope="module")
def client(api):
    with openai.OpenAI(base_url=api.base_url, api_key="unused", max_retries=0) as client:
        yield client


def ensemble_generation(triton_server, fields: dict):
    """The same request straight to the ensemble over gRPC: what the OpenAI answer must match."""
    import tritonclient.grpc.aio as grpcclient

    async def once():
        async with grpcclient.InferenceServerClient(triton_server.grpc_url) as triton:
            return await stream_generate(triton, fields)

    return asyncio.run(once())


@pytest.fixture(scope="module")
def france(client):
    return client.chat.completions.create(model="smollm2", messages=FRANCE, max_tokens=MAX_TOKENS)


def test_models_lists_the_served_model_and_an_unknown_model_is_a_404(client):
    assert [model.id for model in client.models.list()] == ["smollm2"]
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="gpt-4o", messages=FRANCE, max_tokens=4)
    assert raised.value.body["param"] == "model" and "gpt-4o" in raised.value.body["message"]


def test_chat_answers_paris_with_usage_equal_to_the_ensemble_counts(triton_server, france):
    answer = france.choices[0]
    assert "Paris" in answer.message.content
    assert answer.message.role == "assistant" and answer.finish_reason in ("stop", "length")
    assert france.object == "chat.completion" and france.id.startswith("chatcmpl-")
    direct = ensemble_generation(triton_server, request_fields(messages=FRANCE, max_tokens=MAX_TOKENS, stream=False))
    assert answer.message.content == direct.text
    usage = france.usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (direct.stats["num_input_tokens"],
                                                            direct.stats["num_output_tokens"])
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    spec = usage.model_extra["speculative_decoding"]
    assert spec["draft_tokens"] == direct.stats["total_draft_tokens"]
    assert spec["accepted_draft_tokens"] == direct.stats["total_accepted_draft_tokens"]
    assert spec["acceptance_length"] == pytest.approx(direct.stats["acceptance_length"], abs=1e-3)


def test_async_client_streamed_deltas_concatenate_to_the_non_streamed_text(api, france):
    async def streamed_and_whole():
        async with openai.AsyncOpenAI(base_url=api.base_url, api_key="unused", max_retries=0) as client:
            stream = await client.chat.completions.create(
                model="smollm2", messages=FRANCE, max_tokens=MAX_TOKENS, stream=True,
                stream_options={"include_usage": True})
            chunks = [chunk async for chunk in stream]
            whole = await client.chat.completions.create(model="smollm2", messages=FRANCE, max_tokens=MAX_TOKENS)
            return chunks, whole

    chunks, whole = asyncio.run(streamed_and_whole())
    assert whole.choices[0].message.content == france.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) > 1
    assert "".join(c.choices[0].delta.content for c in content_chunks) == france.choices[0].message.content
    assert chunks[-2].choices[0].finish_reason == france.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == france.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_stop_string_ends_the_answer_before_it(client, france):
    text = france.choices[0].message.content
    stop = "Paris"
    streamed = client.chat.completions.create(model="smollm2", messages=FRANCE, max_tokens=MAX_TOKENS,
                                              stop=[stop, "never-seen"], stream=True)
    chunks = list(streamed)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == text[:text.index(stop)]
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_completions_send_the_prompt_as_text_input(triton_server, client):
    prompt = "Name three primary colours."
    direct = ensemble_generation(triton_server, request_fields(prompt, max_tokens=12, stream=False))
    whole = client.completions.create(model="smollm2", prompt=prompt, max_tokens=12)
    assert whole.object == "text_completion" and whole.choices[0].text == direct.text
    assert whole.usage.prompt_tokens == direct.stats["num_input_tokens"]
    streamed = list(client.completions.create(model="smollm2", prompt=prompt, max_tokens=12, stream=True))
    assert "".join(c.choices[0].text for c in streamed) == direct.text
    assert streamed[-1].choices[0].finish_reason == whole.choices[0].finish_reason


BAD_REQUESTS = [
    # (extra create() arguments, the field the 400 names, words its message has)
    ({"max_tokens": 0}, "max_tokens", "max_tokens"),                       # the ensemble's range check
    ({"temperature": -1.0}, "temperature", "temperature"),
    ({"stop": ["ok", "\ufffd"]}, "stop", "stop[1]: must not contain U+FFFD"),
    ({"seed": -1}, "seed", "seed"),
    ({"n": 2}, "n", "only n=1"),
    ({"logprobs": True}, "logprobs", "logprobs"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools", "not supported"),
    ({"response_format": {"type": "json_object"}}, "response_format", "not supported"),
    ({"reasoning_effort": "low"}, "reasoning_effort", "chat format"),  # ChatML has no effort levels
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages", "role"),
    ({"stream_options": {"include_usage": True}}, "stream_options", "stream"),
]


@pytest.mark.parametrize("extra,param,words", BAD_REQUESTS, ids=[case[1] for case in BAD_REQUESTS])
def test_bad_input_is_a_400_naming_the_field_and_the_server_stays_up(client, extra, param, words):
    arguments = {"model": "smollm2", "messages": FRANCE, "max_tokens": 4, **extra}
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(**arguments)
    body = raised.value.body
    assert body["param"] == param and words in body["message"], body
    assert words in body["message"] and body["type"] == "invalid_request_error"
    assert client.chat.completions.create(model="smollm2", messages=FRANCE, max_tokens=2).usage.completion_tokens == 2


def test_streaming_bad_input_is_a_400_before_any_event(client):
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="smollm2", messages=FRANCE, max_tokens=0, stream=True)
    assert raised.value.body["param"] == "max_tokens"


@pytest.fixture(scope="module")
def freed_within_s(client):
    """The issue's 1 s, or ABORT_STEPS engine steps where other load makes steps slower than 250 ms
    (the abort takes steps, not seconds): a step = the median gap between streamed chunks now."""
    arrivals = []
    for _ in client.chat.completions.create(model="smollm2", messages=FRANCE, max_tokens=12, stream=True,
                                            extra_body={"min_tokens": 12}):
        arrivals.append(time.monotonic())
    gaps = sorted(later - earlier for earlier, later in zip(arrivals[1:], arrivals[2:-2]))
    step_s = gaps[len(gaps) // 2]
    print(f"engine step now: {step_s * 1000:.0f} ms")
    return max(FREED_WITHIN_S, ABORT_STEPS * step_s)


def test_dropped_streaming_client_frees_its_engine_slot(triton_server, client, freed_within_s):
    cancelled_before = metric(triton_server, "triton_eagle_requests_total", finish_reason="cancelled")
    stream = client.chat.completions.create(model="smollm2", messages=FRANCE, max_tokens=400,
                                            stream=True, extra_body={"min_tokens": 400})
    chunks = iter(stream)
    for _ in range(3):
        next(chunks)
    assert metric(triton_server, "triton_eagle_engine_active_requests") == 1
    stream.close()
    dropped = time.monotonic()
    assert wait_for(lambda: metric(triton_server, "triton_eagle_engine_active_requests") == 0,
                    timeout_s=freed_within_s), f"the engine still holds the request {freed_within_s:.2f} s after its client left"
    print(f"streamed: engine slot freed {time.monotonic() - dropped:.3f} s after the client left")
    assert wait_for(lambda: metric(triton_server, "triton_eagle_requests_total", finish_reason="cancelled")
                    == cancelled_before + 1)


def test_client_that_gives_up_on_a_non_streamed_answer_frees_its_engine_slot(triton_server, client, freed_within_s):
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=3.0).chat.completions.create(
            model="smollm2", messages=FRANCE, max_tokens=400, extra_body={"min_tokens": 400})
    gone = time.monotonic()
    assert wait_for(lambda: metric(triton_server, "triton_eagle_engine_active_requests") == 0,
                    timeout_s=freed_within_s), f"the engine still holds the request {freed_within_s:.2f} s after its client left"
    print(f"non-streamed: engine slot freed {time.monotonic() - gone:.3f} s after the client left")


def test_health_and_the_metrics_pointer(api, triton_server):
    assert api.health_status() == 200
    with LOCAL_OPENER.open(f"{api.url}/metrics", timeout=5) as response:   # follows the redirect
        assert "triton_eagle_output_tokens_total" in response.read().decode()


def test_api_key_is_required_when_set(triton_server):
    with OpenAIServer(triton_server.grpc_url, free_port(), api_key="sesame") as keyed:
        with openai.OpenAI(base_url=keyed.base_url, api_key="wrong", max_retries=0) as client:
            with pytest.raises(openai.AuthenticationError) as raised:
                client.models.list()
            assert raised.value.status_code == 401
        with openai.OpenAI(base_url=keyed.base_url, api_key="sesame", max_retries=0) as client:
            assert [model.id for model in client.models.list()] == ["ensemble"]
        assert keyed.health_status() == 200   # health stays open, as vLLM's does


def test_unreachable_triton_is_a_503():
    with OpenAIServer(f"127.0.0.1:{free_port()}", free_port()).start(wait_for_ensemble=False) as lonely:
        assert lonely.health_status() == 503
        with openai.OpenAI(base_url=lonely.base_url, api_key="unused", max_retries=0) as client:
            with pytest.raises(openai.InternalServerError) as raised:
                client.chat.completions.create(model="ensemble", messages=FRANCE, max_tokens=4)
        assert raised.value.status_code == 503 and "not reachable" in raised.value.body["message"]


def test_locust_openai_user_reports_the_same_per_request_metrics(triton_server, api, tmp_path):
    from test_loadtest_e2e import loadtest

    started = time.monotonic()
    code, report = loadtest(triton_server, tmp_path, "--users", "2", "--duration", "120", "--requests", "5",
                            "--protocol", "openai",
                            "--openai-port", str(api.port), "--workload", "synthetic", "--input-tokens", "16",
                            "--output-tokens", "6", "--csv", str(tmp_path / "locust"))
    assert code == 0, report["failures"]
    assert report["protocols"] == ["openai"]
    assert report["requests"]["sent"] == report["requests"]["completed"] == 5   # --requests ends the run
    assert time.monotonic() - started < 100
    assert report["output_tokens_per_request"]["min"] == report["output_tokens_per_request"]["max"] == 6
    for key in ("ttft_s", "itl_s", "user_tokens_per_s"):
        assert 0 < report[key]["p50"] <= report[key]["p99"], key
    assert report["acceptance_length"]["overall"] >= 1.0
    assert "OpenAI,generate_stream" in (tmp_path / "locust_stats.csv").read_text()
