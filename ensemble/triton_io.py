"""What the preprocessing and postprocessing Triton models share: tensor declarations
for `auto_complete_config` and the engine YAML's location. No pb_utils here."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

MAX_BATCH_SIZE = 64                                  # docs/interface.md §1: all models batch-dim'd
DEFAULT_ENGINE_CONFIG = "tensorrt_llm/engine.yaml"   # relative to the model repository root


def declare_tensors(auto_complete_model_config, inputs: Mapping[str, tuple[str, list[int]]],
                    outputs: Mapping[str, tuple[str, list[int]]], optional_inputs: bool = True):
    """Declare the model's tensors in code, so config.pbtxt cannot drift from execute()."""
    config = auto_complete_model_config
    if config.as_dict().get("max_batch_size", 0) == 0:
        config.set_max_batch_size(MAX_BATCH_SIZE)
    for name, (data_type, dims) in inputs.items():
        config.add_input({"name": name, "data_type": data_type, "dims": dims, "optional": optional_inputs})
    for name, (data_type, dims) in outputs.items():
        config.add_output({"name": name, "data_type": data_type, "dims": dims})
    return config


def engine_config_path(model_repository: str, model_config: Mapping[str, Any]) -> Path:
    """The engine YAML named by the `engine_config` parameter.

    Triton passes `args["model_repository"]` as this model's own folder; the
    parameter is relative to the repository root above it (or absolute).
    """
    parameter = model_config.get("parameters", {}).get("engine_config", {}).get("string_value")
    return Path(model_repository).resolve().parent / (parameter or DEFAULT_ENGINE_CONFIG)


def model_parameter(model_config: Mapping[str, Any], key: str, default: str) -> str:
    return model_config.get("parameters", {}).get(key, {}).get("string_value") or default

