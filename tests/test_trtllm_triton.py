"""The trtllm engine on the full Triton path, on the CPU: a real tritonserver serving the
repository `triton-eagle repo --preset gpt-oss-120b-eagle3` writes, with TensorRT-LLM 1.2
replaced by the test double (tests/fake_trtllm).

How the double gets into the Python backend stub: the stub ignores PYTHONPATH but puts each
model's version folder on sys.path, so the test copies the double's `tensorrt_llm` package
into `tensorrt_llm/1/` of its throwaway repository. The product code is unchanged: it
imports `tensorrt_llm` as it would on a GPU machine.
"""
from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest

from triton_eagle.repo import write_repository
from triton_server import Stream, is_final, start_server, wait_for
from trtllm_double import DOUBLE_PACKAGE, EAGLE3_HEAD_CONFIG, GPT_OSS_CONFIG, calls, fake_checkpoint

pytestmark = pytest.mark.triton

ANALYSIS = "The user asks for the capital of France. Answer: Paris."
FINAL = "The capital of France is Paris. 🗼 Bon voyage!"


@pytest.fixture(scope="module")
def harmony():
    from ensemble.tokenizer import load_tokenizer

    return load_tokenizer("/unused", "harmony")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, harmony):
    """(server, target checkpoint folder) for the gpt-oss preset over the double."""
    root = tmp_path_factory.mktemp("trtllm-triton")
    completion = ([harmony.channel_id] + harmony.encode_plain("analysis")
                  + [harmony.message_id] + harmony.encode_plain(ANALYSIS) + [harmony.end_id, harmony.start_id]
                  + harmony.encode_plain("assistant") + [harmony.channel_id] + harmony.encode_plain("final")
                  + [harmony.message_id] + harmony.encode_plain(FINAL) + [harmony.return_id])
    model = fake_checkpoint(root / "gpt-oss-120b", GPT_OSS_CONFIG, completion, tokens_per_step=[3, 1, 4, 2],
                            step_delay_s=0.01)
    draft = fake_checkpoint(root / "gpt-oss-120b-Eagle3-v2", EAGLE3_HEAD_CONFIG)
    repository = root / "repo"
    write_repository("gpt-oss-120b-eagle3", model, draft, repository, visible_gpus=8)
    shutil.copytree(DOUBLE_PACKAGE, repository / "tensorrt_llm" / "1" / "tensorrt_llm",
                    ignore=shutil.ignore_patterns("__pycache__"))
    server = start_server(repository, name="trtllm-double")
    try:
        yield server, model
    finally:
        server.stop()


def text_tensor(value: str) -> np.ndarray:
    return np.array([[value.encode()]], dtype=object)


def request(prompt: str, stream: bool = True, **extra) -> dict[str, np.ndarray]:
    """`prompt` as a one-message chat (messages), as a chat client sends it."""
    chat = json.dumps([{"role": "user", "content": prompt}])
    inputs = {"messages": text_tensor(chat), "max_tokens": np.array([[256]], dtype=np.int32),
              "stream": np.array([[stream]], dtype=bool)}
    for name, value in extra.items():
        if isinstance(value, str):
            inputs[name] = text_tensor(value)
        elif isinstance(value, float):
            inputs[name] = np.array([[value]], dtype=np.float32)
        elif isinstance(value, int):
            inputs[name] = np.array([[value]], dtype=np.uint64 if "seed" in name else np.int32)
        elif isinstance(value, list):
            inputs[name] = np.array([[v.encode() for v in value]], dtype=object)
    return inputs


def generate(server, prompt: str, stream: bool = True, **extra):
    client = Stream(server)
    try:
        client.send("ensemble", request(prompt, stream, **extra))
        responses = client.until_final()
    finally:
        client.close()
    if isinstance(responses[-1], Exception):
        return responses[-1]
    text = "".join(r.as_numpy("text_output").reshape(-1)[0].decode() for r in responses)
    reasoning = "".join(r.as_numpy("reasoning_output").reshape(-1)[0].decode() for r in responses)
    last = responses[-1]
    stats = {name: last.as_numpy(name).reshape(-1)[0].item()
             for name in ("num_output_tokens", "total_draft_tokens", "total_accepted_draft_tokens",
                          "acceptance_length")}
    stats["finish_reason"] = last.as_numpy("finish_reason").reshape(-1)[0].decode()
    return text, reasoning, stats, len(responses)


def test_llm_is_built_from_the_preset_inside_triton(deployment):
    _, model = deployment
    (llm_call,) = calls(model, "LLM")
    kwargs = llm_call["kwargs"]
    assert (kwargs["tensor_parallel_size"], kwargs["max_batch_size"], kwargs["backend"]) == (8, 32, "pytorch")
    assert kwargs["speculative_config"]["eagle3_layers_to_capture"] == [-1]
    assert kwargs["kv_cache_config"] == {"enable_block_reuse": False}
    assert kwargs["return_perf_metrics"] is True   # per-request timings and counters


@pytest.mark.parametrize("names", [("seed", "min_tokens"), ("random_seed", "min_length")])
def test_seed_and_min_tokens_reach_tensorrt_llm_under_either_name(deployment, names):
    server, model = deployment
    seed_name, min_name = names
    text, _, stats, _ = generate(server, "Seeded", **{seed_name: 11, min_name: 5})
    assert stats["finish_reason"] == "stop"
    params = calls(model, "generate_async")[-1]["sampling_params"]
    assert (params["seed"], params["min_tokens"]) == (11, 5)


def test_bad_words_are_refused_where_tensorrt_llms_sampler_ignores_them(deployment):
    server, _ = deployment
    error = generate(server, "No bad words", bad_words=["Paris"])
    assert isinstance(error, Exception) and "bad_words" in str(error) and "ignores bad words" in str(error)


def test_a_prompt_over_the_cards_max_num_tokens_gets_the_clear_error(deployment, harmony):
    """gpt-oss card: max_num_tokens 8192 without chunked prefill caps prompts (docs/deploy-b200.md)."""
    server, _ = deployment
    error = generate(server, "word " * 9000)
    assert isinstance(error, Exception)
    assert "more than max_num_tokens (8192)" in str(error) and "enable_chunked_prefill: true" in str(error)


def test_streamed_answer_and_reasoning_are_separate_and_equal_the_non_streamed(deployment):
    server, _ = deployment
    streamed = generate(server, "What is the capital of France?")
    whole = generate(server, "What is the capital of France?", stream=False)
    assert streamed[:2] == whole[:2] == (FINAL, ANALYSIS)
    assert streamed[3] > 3 and whole[3] == 1
    stats = streamed[2]
    assert stats["finish_reason"] == "stop"
    assert stats["total_draft_tokens"] > 0 and stats["acceptance_length"] > 1.0
    assert stats["total_accepted_draft_tokens"] <= stats["total_draft_tokens"]


def test_reasoning_effort_reaches_the_prompt(deployment, harmony):
    server, model = deployment
    generate(server, "Effort check", reasoning_effort="high")
    prompt = calls(model, "generate_async")[-1]["prompt_token_ids"]
    assert "Reasoning: high" in harmony.decode(prompt) and "Effort check" in harmony.decode(prompt)
    generate(server, "Default effort")
    assert "Reasoning: medium" in harmony.decode(calls(model, "generate_async")[-1]["prompt_token_ids"])
    error = generate(server, "x", reasoning_effort="extreme")
    assert isinstance(error, Exception) and "reasoning_effort: must be one of low, medium, high" in str(error)


def test_sampling_is_refused_with_an_error_naming_temperature(deployment):
    server, _ = deployment
    error = generate(server, "Sample please", temperature=0.8)
    assert isinstance(error, Exception) and "temperature" in str(error) and "greedily" in str(error)


def test_stop_word_in_the_answer_ends_the_request(deployment):
    server, model = deployment
    aborts_before = len(calls(model, "abort"))
    text, reasoning, stats, _ = generate(server, "Stop early", stop_words=["Paris. "])
    assert (text, reasoning, stats["finish_reason"]) == ("The capital of France is ", ANALYSIS, "stop")
    assert wait_for(lambda: len(calls(model, "abort")) > aborts_before)   # the engine model aborted it


def test_cancelled_stream_aborts_the_tensorrt_llm_request(deployment):
    server, model = deployment
    aborts_before = len(calls(model, "abort"))
    client = Stream(server)
    client.send("ensemble", request("Cancel me"))
    first = client.next()
    assert not isinstance(first, Exception) and not is_final(first)
    client.close(cancel=True)
    assert wait_for(lambda: len(calls(model, "abort")) > aborts_before, timeout_s=20)
    time.sleep(0.2)
    assert generate(server, "Still serving")[:2] == (FINAL, ANALYSIS)


QWEN3_REASONING = "Paris has been the capital since 987.\n"
QWEN3_ANSWER = "\n\nParis — 巴黎."


@pytest.fixture(scope="module")
def qwen3_deployment(tmp_path_factory):
    from ensemble.tokenizer import load_tokenizer
    from trtllm_double import QWEN3_CONFIG

    qwen3 = load_tokenizer("/unused", "qwen3")
    root = tmp_path_factory.mktemp("trtllm-triton-qwen3")
    completion = qwen3.encode_plain(QWEN3_REASONING) + [151668] + qwen3.encode_plain(QWEN3_ANSWER) + [151645]
    model = fake_checkpoint(root / "qwen3", QWEN3_CONFIG, completion, tokens_per_step=[2, 4])
    draft = fake_checkpoint(root / "qwen3-eagle3", EAGLE3_HEAD_CONFIG)
    repository = root / "repo"
    write_repository("qwen3-235b-thinking-fp4-eagle3", model, draft, repository, visible_gpus=8)
    shutil.copytree(DOUBLE_PACKAGE, repository / "tensorrt_llm" / "1" / "tensorrt_llm",
                    ignore=shutil.ignore_patterns("__pycache__"))
    server = start_server(repository, name="trtllm-double-qwen3")
    try:
        yield server
    finally:
        server.stop()


def test_qwen3_think_block_is_the_reasoning_output(qwen3_deployment):
    streamed = generate(qwen3_deployment, "Capital of France?")
    whole = generate(qwen3_deployment, "Capital of France?", stream=False)
    assert streamed[:2] == whole[:2] == ("Paris — 巴黎.", "Paris has been the capital since 987.")
    assert streamed[2]["finish_reason"] == "stop"
    error = generate(qwen3_deployment, "x", reasoning_effort="low")
    assert isinstance(error, Exception) and "reasoning_effort: the qwen3 chat format" in str(error)
