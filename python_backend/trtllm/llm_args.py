"""`tensorrt_llm.LLM(...)` arguments from our engine YAML, the way trtllm-serve builds them.

trtllm-serve (tensorrt_llm/commands/serve.py, 1.2) does:
    llm_args, _ = get_llm_args(model=..., tokenizer=..., backend="pytorch", <CLI flags>)
    llm_args = update_llm_args_with_extra_dict(llm_args, yaml.safe_load(extra_options))
    llm_args.pop("build_config")          # PyTorch backend
    LLM(**llm_args)
We call those same two functions. Our YAML carries the CLI flags the model cards pass
(`--tp_size 8 --max_batch_size 32`, ...) under their LLM-API names beside the card's extra
options; merged over get_llm_args' defaults they give the same arguments as the card's
command line, so TensorRT-LLM's own defaults (scheduler policy, KV-cache fraction, ...)
apply exactly as in trtllm-serve. Field names are TensorRT-LLM 1.2's: they drift between
releases, so the release is pinned (TRTLLM_VERSION).
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
    """A warning when the installed release is not the one the field names were written for."""
    version = str(getattr(module, "__version__", "unknown"))
    if version.split(".")[:2] == TRTLLM_VERSION.split("."):
        return None
    return (f"tensorrt_llm {version} is installed; this adapter is written against {TRTLLM_VERSION}.x "
            "(LLM-API field names drift between releases)")


def extra_llm_api_options(config: EngineConfig) -> dict[str, Any]:
    """What trtllm-serve would read from `--extra_llm_api_options`: the YAML minus our keys."""
    options = config.llm_api_options()
    # a kv_cache_config the YAML does not set must not replace get_llm_args' own (it sets the
    # free-memory fraction): trtllm-serve only overrides what the file names
    if "kv_cache_config" not in config.model_fields_set:
        options.pop("kv_cache_config", None)
    backend = options.pop("backend", "pytorch")
    if backend != "pytorch":
        raise ConfigError(f"backend: the trtllm engine serves TensorRT-LLM's PyTorch backend only, got {backend!r}")
    return options


def build_llm_args(config: EngineConfig) -> dict[str, Any]:
    """Keyword arguments for `tensorrt_llm.LLM`, as `trtllm-serve MODEL --backend pytorch
    --extra_llm_api_options <our YAML>` would pass them."""
    from tensorrt_llm.commands.serve import get_llm_args
    from tensorrt_llm.llmapi.llm_utils import update_llm_args_with_extra_dict

    llm_args, _ = get_llm_args(model=config.model, tokenizer=config.tokenizer, backend="pytorch")
    # update_llm_args_with_extra_dict converts (and mutates) nested dicts: hand it a copy
    llm_args = update_llm_args_with_extra_dict(llm_args, copy.deepcopy(extra_llm_api_options(config)))
    llm_args.pop("build_config", None)    # trtllm-serve drops it for the PyTorch backend
    return llm_args
