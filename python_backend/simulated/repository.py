"""A model repository whose `tensorrt_llm` model runs the SIMULATED engine for a seed deployment.

The engine YAML keeps the seed preset's serving shape (chat format, reasoning effort, batch and
sequence limits, draft length) and swaps the engine for `simulated`, whose `model` is the profile.
Everything else (pre/postprocessing, the ensemble, the Triton settings) is the repository as shipped.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import yaml

from python_backend.simulated.profile import load_profile, profile_path
from triton_eagle.tritonserver import REPO_ROOT

TEMPLATE_REPOSITORY = REPO_ROOT / "model_repository"
PRESET_DIR = REPO_ROOT / "presets"
# what the simulation takes over from the preset; the rest of the preset is GPU configuration
PRESET_KEYS = ("chat_format", "reasoning_effort", "max_batch_size", "max_num_tokens", "max_seq_len")
# the bench and the sweep drive up to 128 streams behind the presets' 32 slots: all must be admitted
# (queued, as trtllm-serve queues them), none refused as busy by the default queue of 2 x 32
MAX_QUEUE_SIZE = 128


def simulated_engine_config(profile_name: str, drafting: bool = True) -> dict:
    profile = load_profile(profile_name)
    preset = yaml.safe_load((PRESET_DIR / f"{profile.preset}.yaml").read_text())
    config = {"engine": "simulated", "model": str(profile_path(profile_name).resolve())}
    config.update({key: preset[key] for key in PRESET_KEYS if key in preset})
    config["max_queue_size"] = MAX_QUEUE_SIZE
    if drafting:
        config["speculative_config"] = {"decoding_type": "Eagle",
                                        "max_draft_len": preset["speculative_config"]["max_draft_len"]}
    return config


def set_stream_interval(repository: Path, interval_ms: float) -> None:
    """Set the tensorrt_llm model's `stream_interval_ms` parameter (python_backend/coalescing.py)."""
    config = Path(repository) / "tensorrt_llm" / "config.pbtxt"
    text, count = re.subn(r'(key: "stream_interval_ms"\s*value: \{ string_value: )"[^"]*"',
                          rf'\g<1>"{interval_ms:g}"', config.read_text())
    if count != 1:
        raise ValueError(f"{config}: expected one stream_interval_ms parameter, found {count}")
    config.write_text(text)


def set_postprocessing_instances(repository: Path, count: int) -> None:
    """Run `count` postprocessing instances, responses returned in request order (preserve_ordering).
    Text and order are exact (ensemble/postprocessing_model.py); a cancelled client's request is not
    stopped (model_repository/postprocessing/config.pbtxt says why), so the shipped repository keeps one."""
    if count < 1:
        raise ValueError(f"postprocessing instances must be >= 1, got {count}")
    config = Path(repository) / "postprocessing" / "config.pbtxt"
    text, found = re.subn(r"instance_group \[ \{ count: \d+, kind: KIND_CPU \} \]",
                          f"instance_group [ {{ count: {count}, kind: KIND_CPU }} ]", config.read_text())
    if found != 1:
        raise ValueError(f"{config}: expected one instance_group, found {found}")
    if count > 1:
        text += "dynamic_batching { preserve_ordering: true }\n"
    config.write_text(text)


def write_simulated_repository(profile_name: str, output: Path, drafting: bool = True,
                               stream_interval_ms: float | None = None,
                               postprocessing_instances: int | None = None) -> Path:
    """Copy the shipped repository to `output` with a simulated engine YAML (and, when given, another
    stream interval or number of postprocessing instances); returns `output`."""
    output = Path(output)
    if output.exists():
        shutil.rmtree(output)
    shutil.copytree(TEMPLATE_REPOSITORY, output, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    label = load_profile(profile_name).label
    text = (f"# SIMULATION ({label}): no model runs here; written by python_backend/simulated/repository.py\n"
            + yaml.safe_dump(simulated_engine_config(profile_name, drafting), sort_keys=False))
    (output / "tensorrt_llm" / "engine.yaml").write_text(text)
    if stream_interval_ms is not None:
        set_stream_interval(output, stream_interval_ms)
    if postprocessing_instances is not None:
        set_postprocessing_instances(output, postprocessing_instances)
    return output
