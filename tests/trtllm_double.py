"""Helpers for the contract tests of the trtllm engine: which tensorrt_llm is imported (the
test double in tests/fake_trtllm, or the real package where installed) and fake checkpoint
folders whose "model" is a transcript the double streams."""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import sys
from pathlib import Path

import pytest

DOUBLE_PATH = Path(__file__).resolve().parent / "fake_trtllm"
DOUBLE_PACKAGE = DOUBLE_PATH / "tensorrt_llm"
SCRIPT_FILE = "fake_trtllm_script.json"
CALLS_FILE = "fake_trtllm_calls.jsonl"


def _forget_tensorrt_llm() -> None:
    for name in [name for name in sys.modules if name == "tensorrt_llm" or name.startswith("tensorrt_llm.")]:
        del sys.modules[name]


@contextlib.contextmanager
def tensorrt_llm_from(kind: str):
    """Import tensorrt_llm from the double ("double") or the installed package ("real")."""
    _forget_tensorrt_llm()
    if kind == "double":
        sys.path.insert(0, str(DOUBLE_PATH))
    else:
        spec = importlib.util.find_spec("tensorrt_llm")
        if spec is None:
            pytest.skip("the real tensorrt_llm is not installed here (GPU machines only)")
    try:
        module = importlib.import_module("tensorrt_llm")
        if kind == "real" and getattr(module, "IS_TEST_DOUBLE", False):
            pytest.skip("only the test double is importable here")
        yield module
    finally:
        if kind == "double":
            sys.path.remove(str(DOUBLE_PATH))
        _forget_tensorrt_llm()


def fake_checkpoint(folder: Path, config: dict, output_token_ids: list[int] | None = None,
                    tokens_per_step=(1,), step_delay_s: float = 0.002, **script) -> Path:
    """A checkpoint folder: config.json, plus the double's transcript when given."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    if output_token_ids is not None:
        (folder / SCRIPT_FILE).write_text(json.dumps({"output_token_ids": list(output_token_ids),
                                                      "tokens_per_step": list(tokens_per_step),
                                                      "step_delay_s": step_delay_s, **script}))
    return folder


def calls(model_dir: Path, kind: str | None = None) -> list[dict]:
    path = Path(model_dir) / CALLS_FILE
    entries = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [entry for entry in entries if kind is None or entry["call"] == kind]


GPT_OSS_CONFIG = {"model_type": "gpt_oss", "vocab_size": 201088, "eos_token_id": 200002, "pad_token_id": 199999,
                  "max_position_embeddings": 131072}
QWEN3_CONFIG = {"model_type": "qwen3_moe", "vocab_size": 151936, "eos_token_id": 151645}
EAGLE3_HEAD_CONFIG = {"architectures": ["LlamaForCausalLMEagle3"], "model_type": "llama"}
