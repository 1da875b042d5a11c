"""A small model repository for the fail-well tests: the deployed models with a tight engine YAML."""
from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from triton_eagle.tritonserver import REPO_ROOT

SOURCE = REPO_ROOT / "model_repository"


def write_repository(output: Path, **engine_overrides) -> Path:
    """A copy of model_repository/ whose engine YAML has absolute checkpoint paths and the overrides."""
    shutil.copytree(SOURCE, output, ignore=shutil.ignore_patterns("__pycache__"))
    source_yaml = SOURCE / "tensorrt_llm" / "engine.yaml"
    raw = yaml.safe_load(source_yaml.read_text())
    raw["model"] = str((source_yaml.parent / raw["model"]).resolve())
    spec = raw.get("speculative_config") or {}
    if spec.get("speculative_model_dir"):
        spec["speculative_model_dir"] = str((source_yaml.parent / spec["speculative_model_dir"]).resolve())
    raw.update(engine_overrides)
    (output / "tensorrt_llm" / "engine.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return output
