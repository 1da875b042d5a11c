"""A copy of a model repository with drafting off: the same target, same server, target-only
decoding (the reference engine's `reference: {draft_enabled: false}`), for A/B sweeps."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import yaml

ENGINE_CONFIG_PARAMETER = re.compile(r'key:\s*"engine_config"\s*value:\s*{\s*string_value:\s*"([^"]+)"')
DEFAULT_ENGINE_CONFIG = "tensorrt_llm/engine.yaml"


def engine_config_path(repository: Path) -> Path:
    """The engine YAML the `tensorrt_llm` model's config.pbtxt names (relative to the repository)."""
    pbtxt = repository / "tensorrt_llm" / "config.pbtxt"
    match = ENGINE_CONFIG_PARAMETER.search(pbtxt.read_text()) if pbtxt.is_file() else None
    return repository / (match.group(1) if match else DEFAULT_ENGINE_CONFIG)


def _absolute(path: str | None, base: Path) -> str | None:
    return None if path is None else str((base / Path(path).expanduser()).resolve())


def draft_off_repository(source: str | Path, destination: str | Path) -> Path:
    """Copy `source` to `destination` (replaced) with drafting off in its engine YAML.
    The copy lives elsewhere, so the YAML's relative paths are made absolute."""
    from python_backend.config import load_engine_config

    source, destination = Path(source).resolve(), Path(destination).resolve()
    source_config = engine_config_path(source)
    raw = yaml.safe_load(source_config.read_text()) or {}
    base = source_config.parent
    for key in ("model", "tokenizer"):
        if raw.get(key) is not None:
            raw[key] = _absolute(raw[key], base)
    speculative = raw.get("speculative_config") or {}
    for key in ("speculative_model_dir", "speculative_model"):
        if speculative.get(key) is not None:
            speculative[key] = _absolute(speculative[key], base)
    raw["reference"] = {**(raw.get("reference") or {}), "draft_enabled": False}

    staging = destination.with_name(destination.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging, ignore=shutil.ignore_patterns("__pycache__"))
    target_config = staging / source_config.relative_to(source)
    target_config.write_text(
        f"# Generated from {source_config} by triton-eagle loadtest: drafting off (target-only).\n"
        + yaml.safe_dump(raw, sort_keys=False))
    if load_engine_config(target_config).draft_len != 0:
        raise RuntimeError(f"{target_config}: drafting is still on after the rewrite")
    shutil.rmtree(destination, ignore_errors=True)
    staging.rename(destination)
    return destination
