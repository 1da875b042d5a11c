"""`tensorrt_llm.LLM(...)` arguments from our engine YAML, the way trtllm-serve builds them.

trtllm-serve (tensorrt_llm/commands/serve.py, 1.2) does:
    llm_args, _ = get_llm_args(model=..., tokenizer=..., backend="pytorch", <CLI flags>)
    llm_args = update_llm_args_with_extra_dict(llm_args, yaml.safe_load(extra_options))
    llm_args.pop("build_config")          # PyTorch backend
    LLM(**llm_args)
We call those same two functions with the YAML's LLM-API part as written: TensorRT-LLM
validates its own keys (an unknown or misspelt one fails the model load naming it) and applies
its own defaults where the YAML is silent. The one value we add is `return_perf_metrics`
(below), which our per-request counters and timings need.
"""
from __future__ import annotations

import copy
import importlib
from typing import Any

from python_backend.config import ConfigError, EngineConfig

TRTLLM_VERSION = "1.2"
INSTALL_HINT = (
    "the trtllm engine needs TensorRT-LLM 1.2 (PyTorch backend) on a GPU machine: run Triton from the "
    "NGC container nvcr.io/nvidia/tritonserver:<yy.mm>-trtllm-python-py3 whose TensorRT-LLM is 1.2.x, "
    "or `pip install tensorrt_llm==1.2.0` beside tritonserver (docs/deploy-b200.md); on a CPU machine "
    "set `engine: reference`")


def import_tensorrt_llm():
    """The tensorrt_llm module, or a ConfigError saying what to install."""
    try:
        module = importlib.import_module("tensorrt_llm")
        module.LLM, module.SamplingParams   # noqa: B018 - a namespace package or a broken install has neither
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"engine: cannot import tensorrt_llm ({err}); {INSTALL_HINT}") from err
    return module


def version_warning(module) -> str | None:
    """A warning when the installed release is not the one this adapter was written for."""
    version = str(getattr(module, "__version__", "unknown"))
    if version.split(".")[:2] == TRTLLM_VERSION.split("."):
        return None
    return (f"tensorrt_llm {version} is installed; this adapter is written against {TRTLLM_VERSION}.x "
            "(TensorRT-LLM validates the engine config itself, features are detected on the installed package)")


def extra_llm_api_options(config: EngineConfig) -> dict[str, Any]:
    """What trtllm-serve would read from `--extra_llm_api_options`: the YAML minus our keys,
    plus `return_perf_metrics: true` unless the YAML sets it.

    Per-request perf metrics (timings, speculative counters) are filled when the request's
    SamplingParams or the LLM asks for them (llm.py `_prepare_sampling_params` ORs the two,
    commit 4c05a74891e4df8066f08ed4ce14b0972abe4e25); we set both, so the outputs we promise
    do not depend on which one a release honours.
    """
    # update_llm_args_with_extra_dict converts (and mutates) nested dicts: hand it a copy
    options = copy.deepcopy(config.llm_api_options)
    backend = options.pop("backend", "pytorch")
    if backend != "pytorch":
        raise ConfigError(f"backend: the trtllm engine serves TensorRT-LLM's PyTorch backend only, got {backend!r}")
    options.setdefault("return_perf_metrics", True)
    return options


def build_llm_args(config: EngineConfig) -> dict[str, Any]:
    """Keyword arguments for `tensorrt_llm.LLM`, as `trtllm-serve MODEL --backend pytorch
    --extra_llm_api_options <our YAML>` would pass them. TensorRT-LLM's own validation errors
    come back as a ConfigError naming the YAML."""
    from tensorrt_llm.commands.serve import get_llm_args
    from tensorrt_llm.llmapi.llm_utils import update_llm_args_with_extra_dict

    llm_args, _ = get_llm_args(model=config.model, tokenizer=config.tokenizer, backend="pytorch")
    try:
        llm_args = update_llm_args_with_extra_dict(llm_args, extra_llm_api_options(config))
    except (ValueError, TypeError) as err:   # pydantic's ValidationError is a ValueError
        raise ConfigError(f"TensorRT-LLM refused the engine config {config.source_path or ''}: {err}") from err
    llm_args.pop("build_config", None)    # trtllm-serve drops it for the PyTorch backend
    return llm_args
