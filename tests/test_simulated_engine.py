"""The SIMULATED engine (python_backend/simulated/): acceptance per MT-Bench category as the profile
says, iterations as long as the step-time model says, real answers in the deployment's chat format."""
from __future__ import annotations

import asyncio
import time

import pytest

from ensemble.tokenizer import load_tokenizer
from python_backend.config import ConfigError, parse_engine_config
from python_backend.protocol import SamplingParams, SpeculativeStats
from python_backend.simulated.answers import AnswerBook
from python_backend.simulated.engine import SimulatedEngine, chain_acceptance_probability
from python_backend.simulated.profile import StepTime, StepTimes, load_profile, profile_names
from triton_eagle.prompts import MTBENCH_CATEGORIES

PROFILES = ["gpt-oss-120b-8xb200", "qwen3-235b-thinking-fp4-8xb200"]
CHAT_FORMATS = {"gpt-oss-120b-8xb200": "harmony", "qwen3-235b-thinking-fp4-8xb200": "qwen3"}


@pytest.fixture(scope="module")
def harmony_book():
    return AnswerBook(load_tokenizer("unused", "harmony"))


def fast(profile, base_ms: float = 0.02, per_request_ms: float = 0.0):
    """The profile's acceptance with a quick clock, so thousands of iterations take seconds."""
    step = StepTime(base_ms=base_ms, per_request_ms=per_request_ms)
    return profile.model_copy(update={"step_time": StepTimes(drafting_off=step, drafting_on=step)})


def prompt_of(book: AnswerBook, category: str, index: int = 0) -> list[int]:
    question = [s for s in book.scripts if s.category == category][index].question
    return book.tokenizer.render_chat([{"role": "user", "content": question}])


async def run_all(engine, prompts, params) -> list[tuple[list[int], SpeculativeStats, str]]:
    async def one(prompt):
        tokens, last = [], None
        async for step in engine.generate_async(prompt, params):
            tokens.extend(step.token_ids_diff)
            last = step
        return tokens, last.stats, last.finish_reason
    return await asyncio.gather(*(one(p) for p in prompts))


def test_both_seed_profiles_are_packaged_and_labelled_as_simulations():
    assert set(PROFILES) <= set(profile_names())
    for name in PROFILES:
        profile = load_profile(name)
        assert "simulated" in profile.label
        assert set(profile.acceptance_length) == set(MTBENCH_CATEGORIES)


def test_chain_acceptance_probability_gives_the_mean_tokens_per_step():
    for length in (1.0, 2.0, 2.57, 3.15, 4.0):
        p = chain_acceptance_probability(length, 3)
        assert 1 + p + p * p + p ** 3 == pytest.approx(length, abs=1e-9)


@pytest.mark.parametrize("name", PROFILES)
def test_long_run_acceptance_per_category_is_the_profile_within_2_percent(name):
    profile = load_profile(name)
    book = AnswerBook(load_tokenizer("unused", CHAT_FORMATS[name]))
    engine = SimulatedEngine(fast(profile), book, max_batch_size=64, seed=7)
    params = SamplingParams(max_tokens=4000, ignore_eos=True)
    categories = [c for c in MTBENCH_CATEGORIES for _ in range(4)]
    try:
        results = asyncio.run(run_all(engine, [prompt_of(book, c, i % 4) for i, c in enumerate(categories)], params))
    finally:
        engine.shutdown()
    for category in MTBENCH_CATEGORIES:
        stats = [s for (_, s, _), c in zip(results, categories) if c == category]
        accepted = sum(s.total_accepted_draft_tokens for s in stats)
        steps = sum(s.drafting_steps for s in stats)
        assert steps > 4000
        measured = 1 + accepted / steps
        assert measured == pytest.approx(profile.acceptance_length[category], rel=0.02), category


@pytest.mark.parametrize("requests", [1, 16])
def test_iterations_last_as_long_as_the_step_time_model(harmony_book, requests):
    profile = fast(load_profile("gpt-oss-120b-8xb200"), base_ms=4.0, per_request_ms=0.5)
    engine = SimulatedEngine(profile, harmony_book, seed=1)
    params = SamplingParams(max_tokens=100, ignore_eos=True)
    prompts = [prompt_of(harmony_book, "writing", i % 10) for i in range(requests)]
    started = time.perf_counter()
    try:
        asyncio.run(run_all(engine, prompts, params))
    finally:
        engine.shutdown()
    elapsed = time.perf_counter() - started
    expected_step_s = (4.0 + 0.5 * requests) / 1000
    assert engine.mean_step_s == pytest.approx(expected_step_s, rel=0.15)
    # no iteration is skipped or cut short: each lasts at least the model's one-request step (requests
    # accept different draft lengths, so the last iterations run fewer of them)
    assert elapsed >= engine.iterations * (4.0 + 0.5 * 1) / 1000 * 0.9


def test_drafting_off_streams_one_token_per_iteration_at_the_decode_pace(harmony_book):
    engine = SimulatedEngine(fast(load_profile("gpt-oss-120b-8xb200")), harmony_book, draft_len=0)
    try:
        [(tokens, stats, reason)] = asyncio.run(run_all(engine, [prompt_of(harmony_book, "math")],
                                                        SamplingParams(max_tokens=50)))
    finally:
        engine.shutdown()
    assert (len(tokens), reason, stats.generation_steps, stats.drafting_steps) == (50, "length", 50, 0)


def test_the_answer_is_real_text_in_harmony_channels(harmony_book):
    engine = SimulatedEngine(fast(load_profile("gpt-oss-120b-8xb200")), harmony_book)
    try:
        [(tokens, stats, reason)] = asyncio.run(run_all(engine, [prompt_of(harmony_book, "coding")],
                                                        SamplingParams(max_tokens=4000)))
    finally:
        engine.shutdown()
    assert reason == "stop" and tokens[-1] == harmony_book.end_id
    parser = harmony_book.tokenizer.new_output_parser(())
    answer, reasoning = parser.feed(tokens, final=True)
    script = [s for s in harmony_book.scripts if s.category == "coding"][0]
    assert answer and reasoning and answer in harmony_book.tokenizer.decode(script.token_ids)


def test_a_drafting_length_the_cards_did_not_measure_is_refused():
    config = parse_engine_config({"engine": "simulated", "model": "gpt-oss-120b-8xb200", "chat_format": "harmony",
                                  "speculative_config": {"decoding_type": "Eagle", "max_draft_len": 5}})
    with pytest.raises(ConfigError, match="max_draft_len"):
        SimulatedEngine.from_config(config)


def test_an_unknown_profile_is_refused_naming_the_key():
    config = parse_engine_config({"engine": "simulated", "model": "b300-dreams", "chat_format": "harmony"})
    with pytest.raises(ConfigError, match="model: .*unknown simulation profile 'b300-dreams'"):
        SimulatedEngine.from_config(config)


def test_sweep_curves_the_profile_predicts_are_labelled_and_follow_the_step_model(tmp_path):
    from loadtest.sweep import expected_curves, markdown, simulated_targets
    from python_backend.config import load_engine_config

    profile = load_profile("gpt-oss-120b-8xb200")
    curves = expected_curves("gpt-oss-120b-8xb200", [1, 32, 64], max_tokens=128)
    on = curves["expected, simulated from published figures: drafting on"]
    off = curves["expected, simulated from published figures: drafting off"]
    # batch 1: the published per-user figures the profile is built from (650 with EAGLE-3, 420 without)
    assert on[0]["user_tokens_per_s"] == pytest.approx(650, rel=0.02)
    assert off[0]["user_tokens_per_s"] == pytest.approx(420, rel=0.01)
    # max_batch_size 32: 64 users get what 32 get, the rest wait
    assert on[2]["output_tokens_per_s"] == on[1]["output_tokens_per_s"]
    assert on[1]["output_tokens_per_s"] == pytest.approx(32 * 2.385 / profile.step_seconds(32, True), rel=0.02)
    targets = simulated_targets("gpt-oss-120b-8xb200", tmp_path)
    assert [t.label for t in targets] == ["simulated from published figures: drafting on",
                                          "simulated from published figures: drafting off"]
    assert [load_engine_config(t.repository / "tensorrt_llm" / "engine.yaml").draft_len for t in targets] == [3, 0]
    table = markdown({"config": {"workload": "mt-bench", "protocol": "grpc", "note": "simulated from published figures"},
                      "curves": {}, "expected": curves, "plot": "pareto.png"})
    assert "**simulated from published figures**" in table and "| 17" in table
