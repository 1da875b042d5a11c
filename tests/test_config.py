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
def test_seed_yamls_load_verbatim_and_round_trip_to_llm_api_options(seed):
    raw = yaml.safe_load(seed)
    config = parse_engine_config({"model": "/models/target", **raw})
    assert config.speculative_config.max_draft_len == 3
    assert config.kv_cache_config.enable_block_reuse is False
    options = config.llm_api_options()
    for key, value in raw.items():
        assert options[key] == value, key


def test_gpu_only_keys_are_reported_as_ignored_on_the_cpu():
    config = parse_engine_config({"model": "m", **yaml.safe_load(GPT_OSS_SEED)})
    assert config.ignored_keys() == ["cuda_graph_config", "enable_attention_dp", "enable_autotuner"]


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
    ({"model": "m", "kv_cache_config": {"enable_block_reus": False}}, "kv_cache_config.enable_block_reus"),
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
