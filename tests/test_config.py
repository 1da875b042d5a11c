"""The engine YAML: trtllm-serve's extra options plus our serving keys."""
from __future__ import annotations

import textwrap

import pytest
import yaml

from python_backend.config import ConfigError, load_engine_config, parse_engine_config

GPT_OSS_SEED = textwrap.dedent("""
    enable_attention_dp: false
    enable_autotuner: false
    cuda_graph_config:
        max_batch_size: 32
        enable_padding: true
    speculative_config:
        decoding_type: Eagle
        max_draft_len: 3
        speculative_model_dir: /models/gpt-oss-120b-Eagle3-v2
        eagle3_layers_to_capture: [-1]
    kv_cache_config:
        enable_block_reuse: false
""")

QWEN3_SEED = textwrap.dedent("""
    enable_attention_dp: false
    disable_overlap_scheduler: true
    enable_autotuner: false
    cuda_graph_config:
        max_batch_size: 1
    speculative_config:
        decoding_type: Eagle
        max_draft_len: 3
        speculative_model_dir: /models/Qwen3-235B-A22B-Thinking-2507-FP4-Eagle3
    kv_cache_config:
        enable_block_reuse: false
""")


@pytest.mark.parametrize("seed", [GPT_OSS_SEED, QWEN3_SEED])
def test_seed_yamls_reach_tensorrt_llm_verbatim(seed):
    raw = yaml.safe_load(seed)
    config = parse_engine_config({"model": "/models/target", "max_seq_len": 8192, **raw})
    assert config.speculative_config.max_draft_len == 3
    assert config.llm_api_options == {"max_seq_len": 8192, **raw}
    assert config.load_warnings() == []


def test_nothing_is_injected_where_the_yaml_is_silent(tmp_path):
    """trtllm-serve's defaults apply: max_batch_size 2048, max_num_tokens 8192 (serve.py get_llm_args,
    BuildConfig's), max_seq_len deduced from the checkpoint; none of them is added to what
    TensorRT-LLM receives."""
    (tmp_path / "config.json").write_text('{"max_position_embeddings": 4096}')
    config = parse_engine_config({"engine": "trtllm", "model": str(tmp_path)})
    assert config.llm_api_options == {}
    assert (config.max_batch_size, config.max_num_tokens, config.max_seq_len) == (2048, 8192, 4096)
    assert config.enable_chunked_prefill is False


def test_tensorrt_llm_keys_we_do_not_know_are_warnings_naming_them_not_refusals():
    raw = {"model": "m", "max_seq_len": 64, "attention_dp_config": {"enable_balance": True},
           "perf_metrics_max_requests": 100, "kv_cache_config": {"onboard_blocks": False},
           "tp_size": 8, "some_future_option": 1}
    config = parse_engine_config(raw)
    assert config.unknown_llm_api_keys() == ["some_future_option", "tp_size"]
    assert [w.split(":")[0] for w in config.load_warnings()] == ["some_future_option", "tp_size"]
    assert config.llm_api_options["kv_cache_config"] == {"onboard_blocks": False}


def test_a_misspelt_serving_key_is_refused_with_the_key_it_resembles():
    with pytest.raises(ConfigError, match="chat_fromat: unknown key .*'chat_format'"):
        parse_engine_config({"model": "m", "chat_fromat": "harmony"})


def test_gpu_only_keys_are_reported_as_ignored_on_the_cpu():
    config = parse_engine_config({"model": "m", "max_seq_len": 64, **yaml.safe_load(GPT_OSS_SEED)})
    assert config.ignored_keys() == ["cuda_graph_config", "enable_attention_dp", "enable_autotuner",
                                     "kv_cache_config"]


def test_eagle_and_eagle3_both_load_for_the_cpu_engine():
    for decoding_type in ("Eagle", "Eagle3"):
        config = parse_engine_config({"model": "m", "max_seq_len": 64, "speculative_config": {
            "decoding_type": decoding_type, "max_draft_len": 2}})
        assert config.draft_len == 2


def test_relative_paths_resolve_against_the_yaml_folder(tmp_path):
    (tmp_path / "repo").mkdir()
    path = tmp_path / "repo" / "engine.yaml"
    path.write_text("model: ../models/target\nspeculative_config:\n  decoding_type: Eagle\n"
                    "  max_draft_len: 2\n  speculative_model_dir: ../models/head\n")
    config = load_engine_config(path)
    assert config.model == str(tmp_path / "models" / "target")
    assert config.speculative_config.speculative_model_dir == str(tmp_path / "models" / "head")


@pytest.mark.parametrize("raw, field", [
    ({"model": "m", "speculative_config": {"decoding_type": "Eagle", "max_draft_len": 0}}, "max_draft_len"),
    ({"model": "m", "max_batch_size": 0}, "max_batch_size"),
    ({"model": "m", "engine": "vllm"}, "engine"),
    ({"max_batch_size": 4}, "model"),
    ({"model": "m", "speculative_config": {"decoding_type": "MTP", "max_draft_len": 3}}, "decoding_type"),
    ({"model": "m", "speculative_config": {"decoding_type": "Eagle", "max_draft_len": 3,
                                           "draft_len_schedule": {4: 2}}}, "batch size 1"),
])
def test_invalid_configs_fail_naming_the_field(raw, field):
    with pytest.raises(ConfigError, match=field):
        parse_engine_config(raw)


def test_missing_or_broken_yaml_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_engine_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_engine_config(bad)
