"""The reference engine through its public API (the TensorRT-LLM LLM-API shape)."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from python_backend.config import ConfigError, parse_engine_config
from python_backend.protocol import InvalidRequestError, SamplingParams
from python_backend.reference.engine import ReferenceEngine

VARIED_PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain recursion to a child.",
    "List three prime numbers.",
    "Translate 'good morning' into Spanish.",
    "What is 12 times 12?",
    "Give me a Python function that reverses a string.",
    "Who wrote Romeo and Juliet?",
    "Describe the color blue without naming it.",
    "What causes rain?",
    "Name a famous painting by Leonardo da Vinci.",
    "How many legs does a spider have?",
    "Suggest a name for a pet turtle.",
    "What is photosynthesis?",
    "Write one sentence about autumn.",
    "Why is the sky blue?",
    "What is the boiling point of water in Celsius?",
    "Tell me a fun fact about octopuses.",
    "Summarize the plot of Cinderella in one sentence.",
    "What does CPU stand for?",
]


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir):
    from ensemble.tokenizer import load_tokenizer

    return load_tokenizer(smollm2_dir)


@pytest.fixture(scope="module")
def engine_config(smollm2_dir, eagle3_head_dir):
    return parse_engine_config({
        "model": str(smollm2_dir),
        "max_batch_size": 16, "max_num_tokens": 4096, "max_seq_len": 512,
        "speculative_config": {"decoding_type": "Eagle", "max_draft_len": 3,
                               "speculative_model_dir": str(eagle3_head_dir)},
    })


@pytest.fixture(scope="module")
def engines(engine_config):
    """(drafting on, target only) sharing one set of target weights."""
    draft_on = ReferenceEngine.from_config(engine_config)
    draft_off = ReferenceEngine(draft_on.target, None, draft_len=0, max_batch_size=16,
                                max_num_tokens=4096, max_seq_len=512)
    yield draft_on, draft_off
    draft_on.shutdown()
    draft_off.shutdown()


def chat(tokenizer, text):
    return tokenizer.render_chat([{"role": "user", "content": text}])


async def collect(engine, prompt, params):
    tokens, steps = [], []
    async for step in engine.generate_async(prompt, params):
        tokens.extend(step.token_ids_diff)
        steps.append(step)
    return tokens, steps


async def run_concurrently(engine, prompts, params, concurrency):
    semaphore = asyncio.Semaphore(concurrency)

    async def one(prompt):
        async with semaphore:
            return (await collect(engine, prompt, params))[0]

    return await asyncio.gather(*(one(p) for p in prompts))


def test_france_question_answers_paris(engines, tokenizer):
    draft_on, _ = engines
    tokens, steps = asyncio.run(collect(draft_on, chat(tokenizer, "What is the capital of France?"),
                                        SamplingParams(max_tokens=32)))
    assert "Paris" in tokenizer.decode(tokens)
    assert steps[-1].finish_reason in ("stop", "length")
    assert steps[-1].stats.drafting_steps >= 1


@pytest.fixture(scope="module")
def target_only_outputs(engines, tokenizer):
    _, draft_off = engines
    prompts = [chat(tokenizer, text) for text in VARIED_PROMPTS]
    return prompts, asyncio.run(run_concurrently(draft_off, prompts, SamplingParams(max_tokens=20), 16))


@pytest.mark.parametrize("concurrency", [1, 4, 16])
def test_speculative_greedy_equals_target_only_greedy(engines, target_only_outputs, concurrency):
    draft_on, _ = engines
    prompts, expected = target_only_outputs
    got = asyncio.run(run_concurrently(draft_on, prompts, SamplingParams(max_tokens=20), concurrency))
    for text, want, have in zip(VARIED_PROMPTS, expected, got):
        assert have == want, text


def test_streaming_reports_speculative_counters(engines, tokenizer):
    draft_on, _ = engines
    _, steps = asyncio.run(collect(draft_on, chat(tokenizer, "Write a haiku about the sea."),
                                   SamplingParams(max_tokens=16)))
    final = steps[-1].stats
    assert final.total_draft_tokens == 3 * final.drafting_steps
    assert 0 <= final.total_accepted_draft_tokens <= final.total_draft_tokens
    assert final.acceptance_length >= 1.0
    # non-final steps carry tokens; only the last one has a finish reason
    assert all(s.finish_reason is None for s in steps[:-1])


def test_non_streaming_returns_one_merged_output(engines, tokenizer):
    draft_on, _ = engines
    prompt = chat(tokenizer, "List three prime numbers.")

    async def both():
        streamed, _ = await collect(draft_on, prompt, SamplingParams(max_tokens=16))
        outputs = [s async for s in draft_on.generate_async(prompt, SamplingParams(max_tokens=16), streaming=False)]
        return streamed, outputs

    streamed, outputs = asyncio.run(both())
    assert len(outputs) == 1 and outputs[0].token_ids_diff == streamed and outputs[0].finished


def test_seeded_sampling_is_reproducible_and_seed_dependent(engines, tokenizer):
    draft_on, _ = engines
    prompt = chat(tokenizer, "Suggest a name for a pet turtle.")

    def sampled(seed):
        params = SamplingParams(max_tokens=16, temperature=1.0, top_p=0.95, seed=seed)
        return asyncio.run(collect(draft_on, prompt, params))[0]

    first = sampled(7)
    assert sampled(7) == first
    assert any(sampled(seed) != first for seed in (8, 9, 10))


def test_cancel_mid_stream_frees_the_slot_and_next_request_runs(engines, tokenizer):
    draft_on, _ = engines
    prompt = chat(tokenizer, "Explain recursion to a child.")

    async def scenario():
        result = draft_on.generate_async(prompt, SamplingParams(max_tokens=400, ignore_eos=True))
        steps = []
        async for step in result:
            steps.append(step)
            if len(steps) == 2:
                result.abort()
        active_after_cancel = draft_on.num_active_requests()
        tokens, _ = await collect(draft_on, prompt, SamplingParams(max_tokens=8))
        return steps, active_after_cancel, tokens

    steps, active_after_cancel, tokens = asyncio.run(scenario())
    assert steps[-1].finish_reason == "cancelled"
    assert sum(len(s.token_ids_diff) for s in steps) < 400
    assert active_after_cancel == 0
    assert len(tokens) > 0


def test_max_batch_size_queues_the_rest(engine_config, engines, tokenizer):
    draft_on, _ = engines
    small = ReferenceEngine(draft_on.target, None, draft_len=0, max_batch_size=2, max_seq_len=512)
    prompt = chat(tokenizer, "What causes rain?")

    async def scenario():
        loop = asyncio.get_running_loop()
        first_token_at, done_at = {}, {}

        async def one(index):
            async for step in small.generate_async(prompt, SamplingParams(max_tokens=6, ignore_eos=True)):
                first_token_at.setdefault(index, loop.time())
            done_at[index] = loop.time()

        await asyncio.gather(*(one(i) for i in range(4)))
        return first_token_at, done_at

    try:
        first_token_at, done_at = asyncio.run(scenario())
    finally:
        small.shutdown()
    # requests 2 and 3 start only after a slot is freed by 0 or 1
    assert min(first_token_at[2], first_token_at[3]) >= min(done_at[0], done_at[1])


def test_generation_stops_at_max_seq_len(engines, tokenizer):
    draft_on, _ = engines
    prompt = chat(tokenizer, "Tell me a fun fact about octopuses.")
    short = ReferenceEngine(draft_on.target, draft_on.decoder.draft, draft_len=3, max_seq_len=len(prompt) + 10)
    try:
        tokens, steps = asyncio.run(collect(short, prompt, SamplingParams(max_tokens=2000, ignore_eos=True)))
    finally:
        short.shutdown()
    assert len(prompt) + len(tokens) == short.max_seq_len
    assert steps[-1].finish_reason == "length"


def test_stop_token_ids_and_min_tokens(engines, tokenizer):
    _, draft_off = engines
    prompt = chat(tokenizer, "What is the capital of France?")
    free, _ = asyncio.run(collect(draft_off, prompt, SamplingParams(max_tokens=16)))
    stop_at = free[3]
    tokens, steps = asyncio.run(collect(draft_off, prompt, SamplingParams(max_tokens=16, stop_token_ids=(stop_at,))))
    assert tokens == free[:free.index(stop_at)] and steps[-1].finish_reason == "stop"
    # a natural end-of-sequence is suppressed before min_tokens
    short, steps = asyncio.run(collect(draft_off, prompt, SamplingParams(max_tokens=64)))
    if steps[-1].finish_reason == "stop":
        longer, _ = asyncio.run(collect(draft_off, prompt, SamplingParams(max_tokens=64, min_tokens=len(short) + 5)))
        assert len(longer) >= len(short) + 5


def test_bad_words_are_never_generated(engines, tokenizer):
    draft_on, draft_off = engines
    prompt = chat(tokenizer, "What is the capital of France?")
    free, _ = asyncio.run(collect(draft_off, prompt, SamplingParams(max_tokens=16)))
    banned = free[1]
    for engine in (draft_on, draft_off):
        tokens, _ = asyncio.run(collect(engine, prompt, SamplingParams(max_tokens=16, bad_words_ids=((banned,),))))
        assert banned not in tokens


@pytest.mark.parametrize("prompt, params, field", [
    ([], SamplingParams(), "prompt_token_ids"),
    ([1] * 600, SamplingParams(), "max_seq_len"),
    ([1, 2, 3], SamplingParams(max_tokens=0), "max_tokens"),
    ([1, 2, 3], SamplingParams(max_tokens=-3), "max_tokens"),
    ([1, 2, 3], SamplingParams(top_p=0.0), "top_p"),
    ([1, 2, 3], SamplingParams(top_p=1.5), "top_p"),
    ([1, 2, 3], SamplingParams(temperature=-0.5), "temperature"),
])
def test_bad_input_is_refused_naming_the_field_while_others_run(engines, tokenizer, prompt, params, field):
    draft_on, _ = engines

    async def scenario():
        running = asyncio.ensure_future(collect(draft_on, chat(tokenizer, "What is 12 times 12?"),
                                                SamplingParams(max_tokens=12)))
        await asyncio.sleep(0)
        with pytest.raises(InvalidRequestError, match=field):
            draft_on.generate_async(prompt, params)
        return await running

    tokens, steps = asyncio.run(scenario())
    assert tokens and steps[-1].finished and steps[-1].error is None


def test_serving_key_typos_fail_at_start_and_llm_api_keys_we_do_not_know_are_warnings(smollm2_dir):
    with pytest.raises(ConfigError, match="chat_fromat: unknown key"):
        parse_engine_config({"model": str(smollm2_dir), "chat_fromat": "chatml"})
    config = parse_engine_config({"model": str(smollm2_dir), "max_batch_sise": 8, "speculative_config": {
        "decoding_type": "Eagle", "max_draft_len": 3, "max_draft_lenn": 4}})
    assert config.unknown_llm_api_keys() == ["max_batch_sise"]
    assert config.ignored_keys() == ["max_batch_sise"]   # the reference engine does not act on it


def test_prompt_length_rules_are_tensorrt_llms_on_the_reference_engine_too(engines):
    """Same rule and words as the trtllm engine (python_backend/prompt_limits.py)."""
    draft_on, _ = engines
    strict = ReferenceEngine(draft_on.target, None, max_num_tokens=8, max_seq_len=512)
    chunked = ReferenceEngine(draft_on.target, None, max_num_tokens=8, max_seq_len=512, enable_chunked_prefill=True)
    try:
        with pytest.raises(InvalidRequestError, match=r"^prompt_token_ids: the prompt has 9 tokens, more than "
                                                      r"max_num_tokens \(8\); .*enable_chunked_prefill: true"):
            strict.generate_async(list(range(1, 10)), SamplingParams(max_tokens=2))
        tokens, _ = asyncio.run(collect(chunked, list(range(1, 10)), SamplingParams(max_tokens=2)))
        assert len(tokens) == 2
    finally:
        strict.shutdown()
        chunked.shutdown()


@pytest.mark.parametrize("limit, key", [({"max_concurrency": 0}, "max_concurrency"),
                                        ({"draft_len_schedule": {1: 3, 8: 5}}, "draft_len_schedule")])
def test_bad_drafting_limits_fail_at_start_naming_the_key(smollm2_dir, limit, key):
    with pytest.raises(ConfigError, match=key):
        parse_engine_config({"model": str(smollm2_dir), "speculative_config": {
            "decoding_type": "Eagle", "max_draft_len": 3, **limit}})
