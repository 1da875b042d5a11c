"""Contract tests of the trtllm engine against TensorRT-LLM 1.2's LLM API.

The API-surface tests run against the test double (tests/fake_trtllm) and, where the real
package is installed, against it too (marked trtllm; skipped here). The streaming tests
drive the double: it streams a transcript per iteration the way RequestOutput does.
"""
from __future__ import annotations

import asyncio
import datetime
from pathlib import Path

import pytest
import yaml

from python_backend.config import ConfigError, load_engine_config, parse_engine_config
from python_backend.engines import build_engine
from python_backend.protocol import InvalidRequestError, SamplingParams
from python_backend.trtllm.llm_args import build_llm_args, extra_llm_api_options, import_tensorrt_llm
from python_backend.trtllm.sampling import trtllm_sampling_kwargs
from triton_eagle.repo import engine_yaml_text
from trtllm_double import (EAGLE3_HEAD_CONFIG, GPT_OSS_CONFIG, QWEN3_CONFIG, calls, fake_checkpoint,
                           tensorrt_llm_from)

PRESETS = ["gpt-oss-120b-eagle3", "qwen3-235b-thinking-fp4-eagle3"]
BOTH = [pytest.param("double"), pytest.param("real", marks=pytest.mark.trtllm)]


@pytest.fixture
def double():
    with tensorrt_llm_from("double") as module:
        yield module


@pytest.fixture(params=BOTH)
def trtllm(request):
    with tensorrt_llm_from(request.param) as module:
        yield module


def preset_config(tmp_path: Path, preset: str, output_token_ids=(), **script):
    model_config = GPT_OSS_CONFIG if preset.startswith("gpt-oss") else QWEN3_CONFIG
    model = fake_checkpoint(tmp_path / "target", model_config, list(output_token_ids), **script)
    draft = fake_checkpoint(tmp_path / "draft", EAGLE3_HEAD_CONFIG)
    path = tmp_path / "engine.yaml"
    path.write_text(engine_yaml_text(preset, model, draft))
    return load_engine_config(path), model, draft


def custom_config(tmp_path: Path, output_token_ids=(), preset="gpt-oss-120b-eagle3", **changes):
    """The preset's YAML with top-level keys (or `speculative_config.<key>`) changed; None removes."""
    config, model, draft = preset_config(tmp_path, preset, output_token_ids)
    raw = yaml.safe_load(Path(config.source_path).read_text())
    for key, value in changes.items():
        section, name = (raw["speculative_config"], key.split(".", 1)[1]) if "." in key else (raw, key)
        if value is None:
            section.pop(name, None)
        else:
            section[name] = value
    path = tmp_path / "custom.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_engine_config(path), model


def trtllm_serve_defaults(model: Path) -> dict:
    """What get_llm_args returns for `trtllm-serve MODEL --backend pytorch` (1.2), as logged."""
    return {
        "model": str(model), "tokenizer": None,
        "scheduler_config": {"__type__": "SchedulerConfig", "capacity_scheduler_policy": "GUARANTEED_NO_EVICT",
                             "context_chunking_policy": None,
                             "dynamic_batch_config": {"__type__": "DynamicBatchConfig",
                                                      "enable_batch_size_tuning": True,
                                                      "enable_max_num_tokens_tuning": False,
                                                      "dynamic_batch_moving_average_window": 128}},
        "pipeline_parallel_size": 1, "moe_expert_parallel_size": None, "gpus_per_node": 8,
        "trust_remote_code": False, "max_beam_width": 1, "backend": "pytorch", "num_postprocess_workers": 0,
        "postprocess_tokenizer_dir": str(model), "reasoning_parser": None,
        "fail_fast_on_attention_window_too_large": False, "otlp_traces_endpoint": None,
        "enable_chunked_prefill": False,
    }


def test_gpt_oss_seed_reaches_llm_with_the_model_card_arguments(double, tmp_path):
    config, model, draft = preset_config(tmp_path, "gpt-oss-120b-eagle3", [1, 2])
    engine = build_engine(config)
    try:
        (llm_call,) = calls(model, "LLM")
        assert llm_call["kwargs"] == {
            **trtllm_serve_defaults(model),
            # the card's flags
            "tensor_parallel_size": 8, "max_batch_size": 32, "max_num_tokens": 8192, "max_seq_len": 131072,
            # the card's extra-llm-api-config.yml
            "enable_attention_dp": False, "enable_autotuner": False,
            "cuda_graph_config": {"max_batch_size": 32, "enable_padding": True},
            "speculative_config": {"__type__": "EagleDecodingConfig", "max_draft_len": 3,
                                   "speculative_model_dir": str(draft), "eagle3_layers_to_capture": [-1],
                                   "num_eagle_layers": 3, "max_total_draft_tokens": 3},
            "kv_cache_config": {"enable_block_reuse": False},
            # the one value we add: per-request timings and counters need it
            "return_perf_metrics": True,
        }
        args = engine._llm.args
        assert args.speculative_config.eagle3_layers_to_capture == {-1}
        assert args.kv_cache_config.enable_block_reuse is False
        assert args.kv_cache_config.free_gpu_memory_fraction == 0.9
        assert (engine.eos_token_id, engine.vocab_size, engine.max_seq_len, engine.draft_len) == (
            200002, 201088, 131072, 3)
    finally:
        engine.shutdown()


def test_qwen3_seed_reaches_llm_with_the_model_card_arguments(double, tmp_path):
    config, model, draft = preset_config(tmp_path, "qwen3-235b-thinking-fp4-eagle3", [1, 2])
    engine = build_engine(config)
    try:
        (llm_call,) = calls(model, "LLM")
        assert llm_call["kwargs"] == {
            **trtllm_serve_defaults(model),
            "tensor_parallel_size": 8, "max_batch_size": 32, "max_num_tokens": 8192, "max_seq_len": 8192,
            "enable_attention_dp": False, "disable_overlap_scheduler": True, "enable_autotuner": False,
            "cuda_graph_config": {"max_batch_size": 1},
            "speculative_config": {"__type__": "EagleDecodingConfig", "max_draft_len": 3,
                                   "speculative_model_dir": str(draft),
                                   "num_eagle_layers": 3, "max_total_draft_tokens": 3},
            "kv_cache_config": {"enable_block_reuse": False},
            "return_perf_metrics": True,
        }
        assert engine._llm.args.speculative_config.eagle3_layers_to_capture is None   # TRT-LLM's default layers
        assert (engine.eos_token_id, engine.max_seq_len) == (151645, 8192)
    finally:
        engine.shutdown()


@pytest.mark.parametrize("preset", PRESETS)
def test_seed_arguments_validate_as_the_llm_api_models(trtllm, tmp_path, preset):
    """The arguments we build pass the LLM API's own pydantic validation (TorchLlmArgs)."""
    from tensorrt_llm.llmapi.llm_args import TorchLlmArgs

    config, _, _ = preset_config(tmp_path, preset, [1])
    llm_args = build_llm_args(config)
    assert "build_config" not in llm_args
    args = TorchLlmArgs(**llm_args)
    assert args.tensor_parallel_size == 8 and args.max_batch_size == 32
    assert args.speculative_config.max_draft_len == 3


def test_unknown_llm_arguments_are_refused_like_the_real_models(trtllm, tmp_path):
    from pydantic import ValidationError

    from tensorrt_llm.llmapi.llm_args import KvCacheConfig, TorchLlmArgs

    with pytest.raises(ValidationError, match="enable_block_reus"):
        KvCacheConfig(enable_block_reus=False)
    with pytest.raises(ValidationError, match="tp_size"):
        TorchLlmArgs(model=str(tmp_path), tp_size=8)


def test_extra_options_are_the_yaml_as_written_with_nothing_injected():
    """trtllm-serve's own defaults (max_batch_size 2048, max_num_tokens 8192, max_seq_len from the
    checkpoint, its KV-cache fraction) apply where the YAML is silent: we add none of them."""
    config = parse_engine_config({"engine": "trtllm", "model": "/m", "tensor_parallel_size": 2})
    assert extra_llm_api_options(config) == {"tensor_parallel_size": 2, "return_perf_metrics": True}
    off = parse_engine_config({"engine": "trtllm", "model": "/m", "return_perf_metrics": False})
    assert extra_llm_api_options(off) == {"return_perf_metrics": False}
    with pytest.raises(ConfigError, match="backend"):
        extra_llm_api_options(parse_engine_config({"engine": "trtllm", "model": "/m", "backend": "tensorrt"}))


def test_silent_yaml_gets_trtllm_serve_defaults_inside_the_llm(double, tmp_path):
    model = fake_checkpoint(tmp_path / "target", GPT_OSS_CONFIG, [100])
    engine = build_engine(parse_engine_config({"engine": "trtllm", "model": str(model), "chat_format": "harmony"}))
    try:
        args = engine._llm.args
        assert (args.max_batch_size, args.max_num_tokens, args.max_seq_len) == (2048, 8192, None)
        assert (engine.limits.max_num_tokens, engine.limits.max_seq_len) == (8192, 131072)   # checkpoint's
    finally:
        engine.shutdown()


@pytest.mark.parametrize("changes, key", [
    ({"enable_autotunr": False}, "enable_autotunr"),              # a typo
    ({"tp_size": 8}, "tp_size"),                                   # a trtllm-serve flag, not an LLM-API field
    ({"kv_cache_config": {"enable_block_reus": False}}, "enable_block_reus"),
    ({"speculative_config.decoding_type": "Eagle3"}, "Eagle3"),   # 1.2.0 knows "Eagle" only
])
def test_tensorrt_llm_judges_its_own_keys_and_the_load_fails_naming_the_key(double, tmp_path, changes, key):
    config, _ = custom_config(tmp_path, **changes)
    with pytest.raises(ConfigError, match=f"(?s)TensorRT-LLM refused the engine config .*{key}"):
        build_engine(config)


def test_real_llm_api_keys_we_did_not_list_reach_tensorrt_llm(double, tmp_path):
    config, model = custom_config(tmp_path, [100], attention_dp_config={"enable_balance": True},
                                  perf_metrics_max_requests=64, kv_cache_config={"onboard_blocks": False})
    engine = build_engine(config)
    try:
        (llm_call,) = calls(model, "LLM")
        assert llm_call["kwargs"]["perf_metrics_max_requests"] == 64
        assert engine._llm.args.kv_cache_config.onboard_blocks is False
    finally:
        engine.shutdown()


@pytest.mark.parametrize("params, expected", [
    (SamplingParams(max_tokens=16, end_id=2, pad_id=0),
     {"max_tokens": 16, "top_k": 1, "end_id": 2, "pad_id": 0, "stop_token_ids": [9, 5]}),
    (SamplingParams(max_tokens=8, temperature=0.7, top_p=0.9, top_k=40, seed=7, min_tokens=3),
     {"max_tokens": 8, "temperature": 0.7, "top_p": 0.9, "top_k": 40, "seed": 7, "end_id": 5, "min_tokens": 3,
      "stop_token_ids": [9]}),
    (SamplingParams(max_tokens=4, end_id=-1, stop_token_ids=(11,)),
     {"max_tokens": 4, "top_k": 1, "ignore_eos": True, "stop_token_ids": [11]}),
    (SamplingParams(max_tokens=4, bad_words_ids=((3,), (4, 5))),
     {"max_tokens": 4, "top_k": 1, "end_id": 5, "stop_token_ids": [9], "bad_token_ids": [3], "bad": ["<4,5>"]}),
])
def test_sampling_params_map_to_the_llm_api_fields(trtllm, params, expected):
    kwargs = trtllm_sampling_kwargs(params, eos_token_id=5, extra_stop_token_ids=(9, 5),
                                    decode=lambda ids: "<" + ",".join(map(str, ids)) + ">")
    assert kwargs == {**expected, "return_perf_metrics": True, "detokenize": False}
    built = trtllm.SamplingParams(**kwargs)   # the real dataclass refuses unknown names too
    assert built.max_tokens == expected["max_tokens"] and built.return_perf_metrics is True
    with pytest.raises(TypeError):
        trtllm.SamplingParams(max_new_tokens=4)


def test_missing_tensorrt_llm_says_what_to_install(monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)
    with pytest.raises(ConfigError, match=r"tensorrt_llm.*TensorRT-LLM 1\.2.*trtllm-python-py3"):
        import_tensorrt_llm()
    config = parse_engine_config({"engine": "trtllm", "model": str(tmp_path)})
    with pytest.raises(ConfigError, match="engine: cannot import tensorrt_llm"):
        build_engine(config)


# -- streaming through the double --------------------------------------------------------

def run(coroutine):
    return asyncio.run(coroutine)


async def collect(engine, prompt, params, abort_after: int | None = None):
    result = engine.generate_async(prompt, params, streaming=True)
    steps = []
    async for step in result:
        steps.append(step)
        if abort_after is not None and len(steps) == abort_after:
            result.abort()
    return result, steps


@pytest.fixture
def gpt_oss_engine(double, tmp_path):
    engines = []

    def make(output_token_ids, **script):
        config, model, _ = preset_config(tmp_path, "gpt-oss-120b-eagle3", output_token_ids, **script)
        engine = build_engine(config)
        engines.append(engine)
        return engine, model

    yield make
    for engine in engines:
        engine.shutdown()


def test_steps_carry_accepted_drafts_and_counted_stats(gpt_oss_engine):
    text_ids = list(range(100, 110))
    engine, model = gpt_oss_engine(text_ids + [200002], tokens_per_step=[4, 2, 1])
    result, steps = run(collect(engine, [1, 2, 3], SamplingParams(max_tokens=64, end_id=200002)))
    # context iteration: 1 token; then 1 + accepted drafts per iteration; the last ends at eos (not shown)
    assert [len(s.token_ids_diff) for s in steps] == [1, 4, 2, 1, 2]
    assert [t for s in steps for t in s.token_ids_diff] == text_ids
    assert [s.finish_reason for s in steps] == [None] * 4 + ["stop"]
    final = steps[-1].stats
    # 1.2 leaves speculative_decoding zeroed: counted from the stream (5 iterations, 4 verifying)
    assert (final.generation_steps, final.drafting_steps, final.output_tokens) == (5, 4, 10)
    assert (final.total_accepted_draft_tokens, final.total_draft_tokens) == (5, 12)
    assert final.acceptance_length == pytest.approx(1 + 5 / 4)
    assert steps[-1].timing.first_token_time >= steps[-1].timing.arrival_time > 0
    assert engine.num_active_requests() == 0
    (request,) = calls(model, "generate_async")
    assert request["prompt_token_ids"] == [1, 2, 3] and request["streaming"] is True
    assert request["sampling_params"] == {"max_tokens": 64, "top_k": 1, "end_id": 200002, "pad_id": 200002,
                                          "stop_token_ids": [200012, 199999], "return_perf_metrics": True,
                                          "detokenize": False}


def test_speculative_counters_from_tensorrt_llm_are_used_when_present(gpt_oss_engine):
    engine, _ = gpt_oss_engine(list(range(100, 110)) + [200002], tokens_per_step=[4, 2, 1],
                               populate_spec_dec_metrics=True)
    _, steps = run(collect(engine, [1], SamplingParams(max_tokens=64)))
    final = steps[-1].stats
    # TensorRT-LLM counts the draft that was the end token too (before truncation)
    assert (final.total_draft_tokens, final.total_accepted_draft_tokens) == (12, 7)


def test_max_tokens_ends_with_length_and_a_format_stop_token_ends_with_stop(gpt_oss_engine):
    engine, _ = gpt_oss_engine(list(range(100, 120)), tokens_per_step=[4])
    _, steps = run(collect(engine, [1], SamplingParams(max_tokens=6)))
    assert sum(len(s.token_ids_diff) for s in steps) == 6 and steps[-1].finish_reason == "length"
    call_engine, _ = gpt_oss_engine([100, 101, 200012, 102], tokens_per_step=[4])   # Harmony <|call|>
    _, steps = run(collect(call_engine, [1], SamplingParams(max_tokens=16)))
    assert [t for s in steps for t in s.token_ids_diff] == [100, 101]
    assert steps[-1].finish_reason == "stop"


def test_abort_ends_the_request_with_cancelled(gpt_oss_engine):
    engine, model = gpt_oss_engine(list(range(100, 400)), step_delay_s=0.01)
    result, steps = run(collect(engine, [1], SamplingParams(max_tokens=256), abort_after=2))
    assert steps[-1].finish_reason == "cancelled" and len(steps) < 10
    assert calls(model, "abort") == [{"call": "abort", "request_id": result.request_id}]
    result.abort()   # after the end: nothing reaches the API
    assert len(calls(model, "abort")) == 1
    assert engine.num_active_requests() == 0


def test_sampling_is_refused_under_one_model_eagle_not_served_greedy(gpt_oss_engine):
    engine, model = gpt_oss_engine([100])
    with pytest.raises(InvalidRequestError, match=r"^temperature: .*greedily: set speculative_config"
                                                  r"\.allow_advanced_sampling: true"):
        engine.generate_async([1], SamplingParams(temperature=0.8))
    # greedy variants pass: temperature 0, or top_k 1 at any temperature
    for params in (SamplingParams(temperature=0.0, top_p=0.5), SamplingParams(temperature=0.9, top_k=1)):
        _, steps = run(collect(engine, [1], params))
        assert steps[-1].finished
    assert not [c for c in calls(model, "generate_async") if "temperature" in c["sampling_params"]]


@pytest.mark.parametrize("changes", [{"speculative_config.allow_advanced_sampling": True},
                                     {"speculative_config.eagle3_one_model": False}])
def test_sampling_reaches_tensorrt_llm_where_it_samples(double, tmp_path, changes):
    config, model = custom_config(tmp_path, [100, 200002], **changes)
    engine = build_engine(config)
    try:
        _, steps = run(collect(engine, [1], SamplingParams(temperature=0.8, top_p=0.95, seed=3)))
        assert steps[-1].finished
        (request,) = calls(model, "generate_async")
        assert (request["sampling_params"]["temperature"], request["sampling_params"]["seed"]) == (0.8, 3)
    finally:
        engine.shutdown()


def test_whether_eagle_samples_is_read_from_the_installed_config_class():
    """Feature detection, not a version number: no field = greedy; a deprecated no-op field =
    TensorRT-LLM detects sampling per request; else the field decides."""
    from pydantic import BaseModel, Field

    from python_backend.trtllm.features import sampling_refusal

    class Without(BaseModel):
        eagle3_one_model: bool = True

    class With(Without):
        allow_advanced_sampling: bool = False

    class Deprecated(Without):
        allow_advanced_sampling: bool = Field(default=False, json_schema_extra={"status": "deprecated"},
                                              description="DEPRECATED: no-op kept for backward compatibility.")

    assert "has no allow_advanced_sampling" in sampling_refusal(Without())
    assert sampling_refusal(Without(eagle3_one_model=False)) is None
    assert "allow_advanced_sampling: true" in sampling_refusal(With())
    assert sampling_refusal(With(allow_advanced_sampling=True)) is None
    assert sampling_refusal(Deprecated()) is None
    assert sampling_refusal(None) is None


def test_bad_words_are_refused_where_the_sampler_ignores_them(double, tmp_path):
    """1.2's TorchSampler ignores bad / bad_token_ids (enforced from NVIDIA/TensorRT-LLM PR #16052)."""
    config, _ = custom_config(tmp_path, [100, 200002])
    engine = build_engine(config)
    try:
        with pytest.raises(InvalidRequestError, match=r"^bad_words: .*ignores bad words"):
            engine.generate_async([1], SamplingParams(bad_words_ids=((5,),)))
    finally:
        engine.shutdown()
    config, model = custom_config(tmp_path / "cpp", [100, 200002], sampler_type="TRTLLMSampler")
    engine = build_engine(config)
    try:
        _, steps = run(collect(engine, [1], SamplingParams(bad_words_ids=((5,),))))
        assert steps[-1].finished
        assert calls(model, "generate_async")[-1]["sampling_params"]["bad_token_ids"] == [5]
    finally:
        engine.shutdown()


def test_draft_limits_tensorrt_llm_ignores_are_said_at_load(double, tmp_path, caplog):
    config, _ = custom_config(tmp_path, [100], **{"speculative_config.draft_len_schedule": {1: 3, 8: 0},
                                                  "speculative_config.max_concurrency": 16})
    with caplog.at_level("WARNING"):
        engine = build_engine(config)
    engine.shutdown()
    notes = [r.getMessage() for r in caplog.records if "ignored by TensorRT-LLM" in r.getMessage()]
    assert [n.split(":")[0] for n in notes] == ["speculative_config.max_concurrency",
                                                "speculative_config.draft_len_schedule"]
    assert all("2-model drafter only" in n for n in notes)
    with pytest.raises(ConfigError, match="must map batch size 1 to max_draft_len"):   # both engines' rule
        custom_config(tmp_path / "bad", **{"speculative_config.draft_len_schedule": {1: 2}})


def test_inherited_mpi_job_is_cleared_and_an_mpi_world_is_refused(double, tmp_path, monkeypatch):
    """As NVIDIA's LLM-API Triton model: job variables go, MCA configuration stays."""
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "8")
    monkeypatch.setenv("PMIX_RANK", "0")
    monkeypatch.setenv("OMPI_MCA_btl", "self")
    config, _ = custom_config(tmp_path, [100])
    engine = build_engine(config)
    engine.shutdown()
    import os

    assert "OMPI_COMM_WORLD_SIZE" not in os.environ and "PMIX_RANK" not in os.environ
    assert os.environ["OMPI_MCA_btl"] == "self"
    import tensorrt_llm._utils

    monkeypatch.setattr(tensorrt_llm._utils, "global_mpi_size", lambda: 4)
    with pytest.raises(ConfigError, match="one of 4 MPI ranks .*start tritonserver without mpirun"):
        build_engine(config)


def test_sampling_passes_through_without_a_draft(double, tmp_path):
    model = fake_checkpoint(tmp_path / "target", GPT_OSS_CONFIG, [100, 101, 200002])
    config = parse_engine_config({"engine": "trtllm", "model": str(model), "chat_format": "harmony"})
    engine = build_engine(config)
    try:
        _, steps = run(collect(engine, [1], SamplingParams(temperature=0.8, top_p=0.95, seed=3)))
        assert [t for s in steps for t in s.token_ids_diff] == [100, 101]
        assert steps[-1].stats.total_draft_tokens == steps[-1].stats.drafting_steps == 0
        (request,) = calls(model, "generate_async")
        assert request["sampling_params"]["temperature"] == 0.8 and request["sampling_params"]["seed"] == 3
    finally:
        engine.shutdown()


def test_long_prompt_gets_the_prompt_length_error_naming_the_setting(gpt_oss_engine, double, tmp_path):
    """gpt-oss: the card's max_num_tokens 8192 caps prompts at 8192 tokens without chunked prefill;
    the double (TensorRT-LLM's _check_arguments rule) refuses the same prompt."""
    engine, _ = gpt_oss_engine([100])
    with pytest.raises(InvalidRequestError, match=r"^prompt_token_ids: the prompt has 8193 tokens, more than "
                                                  r"max_num_tokens \(8192\); .*enable_chunked_prefill: true"):
        engine.generate_async([1] * 8193, SamplingParams())
    with pytest.raises(ValueError, match=r"The sum of prompt length \(8193\.0\), query length \(0\) should not "
                                         r"exceed max_num_tokens \(8192\)"):
        engine._llm.generate_async([1] * 8193, double.SamplingParams())
    config, model = custom_config(tmp_path / "chunked", [100, 200002], enable_chunked_prefill=True)
    chunked = build_engine(config)
    try:
        _, steps = run(collect(chunked, [1] * 8193, SamplingParams(max_tokens=4)))
        assert steps[-1].finished and steps[-1].error is None
        assert len(calls(model, "generate_async")[-1]["prompt_token_ids"]) == 8193
    finally:
        chunked.shutdown()


@pytest.mark.parametrize("prompt, params, field", [
    ([], SamplingParams(), "prompt_token_ids"),
    ([1] * 131072, SamplingParams(), "prompt_token_ids"),
    ([201088], SamplingParams(), "prompt_token_ids"),
    ([1], SamplingParams(max_tokens=0), "max_tokens"),
])
def test_bad_requests_are_refused_naming_the_field(gpt_oss_engine, prompt, params, field):
    engine, _ = gpt_oss_engine([100])
    with pytest.raises(InvalidRequestError, match=f"^{field}"):
        engine.generate_async(prompt, params)


def test_executor_errors_and_other_finish_reasons_end_the_request_with_an_error(gpt_oss_engine):
    engine, _ = gpt_oss_engine(list(range(100, 120)), fail_after_steps=2)
    _, steps = run(collect(engine, [1], SamplingParams(max_tokens=64)))
    assert steps[-1].finish_reason == "error" and "TensorRT-LLM: " in steps[-1].error
    timeout_engine, _ = gpt_oss_engine(list(range(100, 102)), final_finish_reason="timeout")
    _, steps = run(collect(timeout_engine, [1], SamplingParams(max_tokens=64)))
    assert (steps[-1].finish_reason, steps[-1].error) == ("error", "TensorRT-LLM ended the request: timeout")


def test_timing_is_read_from_timedeltas():
    from python_backend.trtllm.engine import _seconds

    assert _seconds(datetime.timedelta(seconds=2.5)) == 2.5 and _seconds(None) == 0.0


def test_other_releases_get_a_version_warning_and_other_engines_are_refused(tmp_path):
    import types

    from python_backend.trtllm.engine import TrtllmEngine, _model_vocab_size
    from python_backend.trtllm.llm_args import version_warning

    assert version_warning(types.SimpleNamespace(__version__="1.2.0rc6")) is None
    assert "written against 1.2.x" in version_warning(types.SimpleNamespace(__version__="1.3.0"))
    with pytest.raises(ConfigError, match="engine: TrtllmEngine serves `engine: trtllm`"):
        TrtllmEngine.from_config(parse_engine_config({"model": str(tmp_path)}))
    assert _model_vocab_size(str(tmp_path)) is None       # no config.json: the tokenizer's size is used


def test_counters_never_decrease_when_an_iteration_ends_on_the_end_token(gpt_oss_engine):
    # iteration 3 yields only the end token: tokens - iterations would drop by one
    engine, _ = gpt_oss_engine([100, 101, 102, 103, 200002], tokens_per_step=[3, 1])
    _, steps = run(collect(engine, [1], SamplingParams(max_tokens=64)))
    assert [len(s.token_ids_diff) for s in steps] == [1, 3, 0]
    accepted = [s.stats.total_accepted_draft_tokens for s in steps]
    drafted = [s.stats.total_draft_tokens for s in steps]
    assert accepted == sorted(accepted) and drafted == sorted(drafted)
    assert all(a <= d for a, d in zip(accepted, drafted))
