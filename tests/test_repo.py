"""`triton-eagle repo`: a ready model repository per seed deployment, validated before any GPU work."""
from __future__ import annotations

import re

import pytest
import yaml

from python_backend.config import ConfigError, load_engine_config
from triton_eagle.cli import main
from triton_eagle.repo import engine_yaml_text, validate, visible_gpu_count, write_repository
from trtllm_double import EAGLE3_HEAD_CONFIG, GPT_OSS_CONFIG, QWEN3_CONFIG, fake_checkpoint

SEED_EXTRA_OPTIONS = {
    "gpt-oss-120b-eagle3": {
        "enable_attention_dp": False, "enable_autotuner": False,
        "cuda_graph_config": {"max_batch_size": 32, "enable_padding": True},
        "speculative_config": {"decoding_type": "Eagle", "max_draft_len": 3, "eagle3_layers_to_capture": [-1]},
        "kv_cache_config": {"enable_block_reuse": False},
    },
    "qwen3-235b-thinking-fp4-eagle3": {
        "enable_attention_dp": False, "disable_overlap_scheduler": True, "enable_autotuner": False,
        "cuda_graph_config": {"max_batch_size": 1},
        "speculative_config": {"decoding_type": "Eagle", "max_draft_len": 3},
        "kv_cache_config": {"enable_block_reuse": False},
    },
}
SEED_FLAGS = {
    "gpt-oss-120b-eagle3": {"tensor_parallel_size": 8, "max_batch_size": 32},
    "qwen3-235b-thinking-fp4-eagle3": {"tensor_parallel_size": 8, "max_batch_size": 32,
                                       "max_num_tokens": 8192, "max_seq_len": 8192},
}


@pytest.fixture
def checkpoints(tmp_path):
    return (fake_checkpoint(tmp_path / "target", GPT_OSS_CONFIG), fake_checkpoint(tmp_path / "draft", EAGLE3_HEAD_CONFIG))


@pytest.mark.parametrize("preset, chat_format", [("gpt-oss-120b-eagle3", "harmony"),
                                                 ("qwen3-235b-thinking-fp4-eagle3", "qwen3")])
def test_repository_holds_the_preset_with_the_model_card_values(tmp_path, checkpoints, preset, chat_format):
    model, draft = checkpoints
    notes = write_repository(preset, model, draft, tmp_path / "repo", visible_gpus=8)
    assert notes == []
    raw = yaml.safe_load((tmp_path / "repo" / "tensorrt_llm" / "engine.yaml").read_text())
    for key, value in {**SEED_FLAGS[preset], **SEED_EXTRA_OPTIONS[preset]}.items():
        if key == "speculative_config":
            assert raw[key] == {**value, "speculative_model_dir": str(draft)}
        else:
            assert raw[key] == value, key
    assert (raw["engine"], raw["model"], raw["chat_format"]) == ("trtllm", str(model), chat_format)
    config = load_engine_config(tmp_path / "repo" / "tensorrt_llm" / "engine.yaml")
    assert config.speculative_config.speculative_model_dir == str(draft)
    engine_model = (tmp_path / "repo" / "tensorrt_llm" / "config.pbtxt").read_text()
    assert re.search(r"instance_group \[ \{ count: 1, kind: KIND_MODEL \} \]", engine_model)
    assert "decoupled: true" in engine_model
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["ensemble", "postprocessing",
                                                                      "preprocessing", "tensorrt_llm"]
    assert (tmp_path / "repo" / "tensorrt_llm" / "1" / "model.py").is_file()


def raw_config(checkpoints, **changes):
    model, draft = checkpoints
    raw = yaml.safe_load(engine_yaml_text("gpt-oss-120b-eagle3", model, draft))
    for key, value in changes.items():
        if key.startswith("speculative_config."):
            raw["speculative_config"][key.split(".", 1)[1]] = value
        elif value is None:
            raw.pop(key)
        else:
            raw[key] = value
    return raw


def test_an_llm_api_key_we_do_not_know_is_a_note_not_a_refusal(checkpoints):
    """Without TensorRT-LLM installed (a laptop), it cannot judge: we name the key and let it judge at load."""
    notes = validate(raw_config(checkpoints, enable_autotunr=False, perf_metrics_max_requests=8), visible_gpus=8)
    assert len(notes) == 1 and notes[0].startswith("enable_autotunr: not a TensorRT-LLM 1.2 LLM-API field")


@pytest.mark.parametrize("changes, field", [
    ({"speculative_config.max_draft_len": 0}, "speculative_config.max_draft_len"),
    ({"speculative_config.max_draft_len": -2}, "speculative_config.max_draft_len"),
    ({"speculative_config.speculative_model_dir": "/no/such/draft"}, "speculative_config.speculative_model_dir"),
    ({"model": "/no/such/model"}, "model"),
    ({"tp_size": 8}, "tp_size"),
    ({"engine": "reference"}, "engine"),
    ({"chat_fromat": "harmony"}, "chat_fromat"),
])
def test_invalid_deployments_fail_naming_the_field(checkpoints, changes, field):
    with pytest.raises(ConfigError, match=f"^{re.escape(field)}|{re.escape(field)}:"):
        validate(raw_config(checkpoints, **changes), visible_gpus=8)


@pytest.mark.parametrize("visible, tp, ok", [(8, 8, True), (16, 8, True), (8, 4, True), (6, 4, False),
                                             (4, 8, False), (0, 8, False)])
def test_tensor_parallel_size_must_divide_the_visible_gpus(checkpoints, visible, tp, ok):
    raw = raw_config(checkpoints, tensor_parallel_size=tp)
    if ok:
        assert validate(raw, visible_gpus=visible) == []
    else:
        with pytest.raises(ConfigError, match="^tensor_parallel_size"):
            validate(raw, visible_gpus=visible)


def test_without_gpu_information_the_check_is_skipped_with_a_note(checkpoints):
    (note,) = validate(raw_config(checkpoints), visible_gpus=None)
    assert "tensor_parallel_size 8 not checked" in note


@pytest.mark.parametrize("value, count", [("0,1,2,3,4,5,6,7", 8), ("", 0), ("2,3", 2), ("0,-1,2", 1),
                                          ("NoDevFiles", 0)])
def test_visible_gpus_follow_cuda_visible_devices(value, count):
    assert visible_gpu_count({"CUDA_VISIBLE_DEVICES": value}) == count


def test_cli_writes_the_repository_and_refuses_to_overwrite(tmp_path, checkpoints, monkeypatch, capsys):
    model, draft = checkpoints
    qwen_model = fake_checkpoint(tmp_path / "qwen", QWEN3_CONFIG)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3,4,5,6,7")
    out = tmp_path / "out"
    args = ["repo", "--preset", "qwen3-235b-thinking-fp4-eagle3", "--model", str(qwen_model), "--draft", str(draft),
            "-o", str(out)]
    assert main(args) == 0
    assert "tritonserver --model-repository" in capsys.readouterr().out
    assert main(args) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert main(args + ["--force"]) == 0
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    assert main(args + ["--force"]) == 2
    assert "tensor_parallel_size: 8 GPUs per engine does not divide the 3 visible GPUs" in capsys.readouterr().err
    assert load_engine_config(out / "tensorrt_llm" / "engine.yaml").model == str(qwen_model)   # untouched
