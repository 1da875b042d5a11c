"""Write a ready Triton model repository for a seed deployment (a preset in presets/).

    triton-eagle repo --preset gpt-oss-120b-eagle3 --model /models/gpt-oss-120b \\
        --draft /models/gpt-oss-120b-Eagle3-v2 -o /srv/repo

The output is a copy of model_repository/ whose tensorrt_llm/engine.yaml is the preset with
the two checkpoint paths filled in, and whose tensorrt_llm model runs as KIND_MODEL (the
engine places itself on the GPUs; decoupled as ever). Everything is checked before any GPU
work: our serving keys, max_draft_len, both checkpoint folders, and tensor_parallel_size against
the GPUs this machine shows (CUDA_VISIBLE_DEVICES, else nvidia-smi; skipped with a note
where neither says anything). Errors name the field. An LLM-API key this project does not know
is a note, not an error: TensorRT-LLM validates its own keys when the model loads.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from python_backend.config import ConfigError, parse_engine_config
from triton_eagle.tritonserver import REPO_ROOT

PRESETS_DIR = REPO_ROOT / "presets"
TEMPLATE_REPOSITORY = REPO_ROOT / "model_repository"
MODEL_PLACEHOLDER = "<target checkpoint>"
DRAFT_PLACEHOLDER = "<eagle3 checkpoint>"
# trtllm-serve's CLI spellings, which are not LLM-API argument names
CLI_ONLY_NAMES = {"tp_size": "tensor_parallel_size", "pp_size": "pipeline_parallel_size",
                  "ep_size": "moe_expert_parallel_size"}
INSTANCE_GROUP = re.compile(r"instance_group \[[^\]]*\]")


def preset_names() -> list[str]:
    return sorted(path.stem for path in PRESETS_DIR.glob("*.yaml"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", required=True, choices=preset_names(), help="the seed deployment")
    parser.add_argument("--model", required=True, type=Path, help="target checkpoint folder (Hugging Face format)")
    parser.add_argument("--draft", required=True, type=Path, help="EAGLE-3 draft checkpoint folder")
    parser.add_argument("-o", "--output", required=True, type=Path, help="model repository folder to write")
    parser.add_argument("--force", action="store_true", help="replace OUTPUT if it exists")


def run(args: argparse.Namespace) -> int:
    try:
        notes = write_repository(args.preset, args.model, args.draft, args.output, force=args.force)
    except (ConfigError, FileExistsError) as err:
        print(f"triton-eagle repo: {err}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"note: {note}")
    print(f"wrote {args.output}\nserve it with:\n  tritonserver --model-repository {args.output.resolve()} "
          "--http-port 8000 --grpc-port 8001 --metrics-port 8002")
    return 0


def engine_yaml_text(preset: str, model: Path, draft: Path) -> str:
    """The preset's text with the checkpoint paths filled in (comments kept)."""
    path = PRESETS_DIR / f"{preset}.yaml"
    if not path.is_file():
        raise ConfigError(f"preset: unknown preset {preset!r} (one of {', '.join(preset_names())})")
    text = path.read_text()
    for placeholder, value in ((MODEL_PLACEHOLDER, model), (DRAFT_PLACEHOLDER, draft)):
        if placeholder not in text:
            raise ConfigError(f"preset {preset}: no {placeholder} to fill")
        text = text.replace(placeholder, _yaml_string(str(Path(value).expanduser().resolve())))
    return text


def _yaml_string(value: str) -> str:
    return yaml.safe_dump(value, default_style='"').strip()


def validate(raw: dict, visible_gpus: int | None) -> list[str]:
    """Checks that need no GPU work; raises ConfigError naming the field, returns notes."""
    for cli_name, api_name in CLI_ONLY_NAMES.items():
        if cli_name in raw:
            raise ConfigError(f"{cli_name}: a trtllm-serve flag, not an LLM-API option; write {api_name}")
    config = parse_engine_config(raw)   # serving keys, max_draft_len <= 0, types
    notes = config.load_warnings()
    if config.engine != "trtllm":
        raise ConfigError(f"engine: presets run the trtllm engine, got {config.engine!r}")
    _checkpoint_folder("model", config.model)
    if config.speculative_config is None:
        raise ConfigError("speculative_config: required (the EAGLE-3 draft)")
    _checkpoint_folder("speculative_config.speculative_model_dir", config.speculative_config.speculative_model_dir)
    world_size = int(raw.get("tensor_parallel_size", 1)) * int(raw.get("pipeline_parallel_size", 1))
    if world_size < 1:
        raise ConfigError(f"tensor_parallel_size: must be >= 1, got {raw.get('tensor_parallel_size')}")
    if visible_gpus is None:
        return notes + [f"no GPU information on this machine (no CUDA_VISIBLE_DEVICES, no nvidia-smi): "
                f"tensor_parallel_size {world_size} not checked against the GPUs"]
    if visible_gpus == 0 or visible_gpus % world_size:
        raise ConfigError(f"tensor_parallel_size: {world_size} GPUs per engine does not divide the "
                          f"{visible_gpus} visible GPUs (CUDA_VISIBLE_DEVICES / nvidia-smi)")
    return notes


def _checkpoint_folder(field: str, path: str | None) -> None:
    if not path or not Path(path).is_dir():
        raise ConfigError(f"{field}: checkpoint folder not found: {path}")
    if not (Path(path) / "config.json").is_file():
        raise ConfigError(f"{field}: {path} has no config.json (expected a Hugging Face checkpoint folder)")


def visible_gpu_count(environ: dict[str, str] | None = None) -> int | None:
    """GPUs this process may use: CUDA_VISIBLE_DEVICES if set, else nvidia-smi's list, else None."""
    environ = os.environ if environ is None else environ
    devices = environ.get("CUDA_VISIBLE_DEVICES")
    if devices is not None:
        entries = [d.strip() for d in devices.split(",") if d.strip()]
        # CUDA stops at the first invalid entry ("-1", "NoDevFiles")
        count = 0
        for entry in entries:
            if entry.startswith("-") or entry.lower() == "nodevfiles":
                break
            count += 1
        return count
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return sum(1 for line in listing.splitlines() if line.startswith("GPU "))


def write_repository(preset: str, model: Path, draft: Path, output: Path, *, force: bool = False,
                     visible_gpus: int | None | str = "detect") -> list[str]:
    """Validate, then write the repository atomically; returns notes for the user."""
    text = engine_yaml_text(preset, model, draft)
    raw = yaml.safe_load(text)
    notes = validate(raw, visible_gpu_count() if visible_gpus == "detect" else visible_gpus)
    output = Path(output)
    if output.exists() and any(output.iterdir()) and not force:
        raise FileExistsError(f"output: {output} exists and is not empty (pass --force to replace it)")
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        repository = staging / "repo"
        shutil.copytree(TEMPLATE_REPOSITORY, repository,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (repository / "tensorrt_llm" / "engine.yaml").write_text(text)
        _engine_model_on_gpus(repository / "tensorrt_llm" / "config.pbtxt")
        if output.exists():
            shutil.rmtree(output)
        repository.rename(output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return notes


def _engine_model_on_gpus(config_path: Path) -> None:
    """KIND_MODEL: TensorRT-LLM places its tensor-parallel ranks on the GPUs itself."""
    text = config_path.read_text()
    if "decoupled: true" not in text:
        raise ConfigError(f"{config_path}: the tensorrt_llm model must be decoupled")
    replaced, count = INSTANCE_GROUP.subn("instance_group [ { count: 1, kind: KIND_MODEL } ]", text)
    if count != 1:
        raise ConfigError(f"{config_path}: expected one instance_group to set KIND_MODEL, found {count}")
    config_path.write_text(replaced)
