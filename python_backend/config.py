"""One engine config for both engines: trtllm-serve's `--extra_llm_api_options` YAML (the
TensorRT-LLM LLM API's field names) plus a few serving keys of ours.

Who judges what, at model load:
- our serving keys are typed here and refuse unknown values (a typo fails naming the key);
- the LLM-API part goes to TensorRT-LLM verbatim, which validates it itself in
  `update_llm_args_with_extra_dict` / `LLM(...)` (as NVIDIA's own LLM-API Triton model does:
  triton_backend/all_models/llmapi/tensorrt_llm/1/model.py), so the installed release decides;
- the few LLM-API fields the CPU engine and the request checks read are typed too, leniently
  (their other keys pass through). An LLM-API key we do not know is a warning naming it, not a
  refusal: TensorRT-LLM, when installed, is the judge.
Nothing is injected: where the YAML is silent, trtllm-serve's own defaults apply (DEFAULTS).
Relative paths resolve against the YAML file's folder.
"""
from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from python_backend.reference.draft_policy import check_draft_limits


# Default queue: two waves of requests behind the running batch. Deeper queues only turn a
# quick "busy, retry elsewhere" into a long wait (512 requests on 32 slots: the last waited ~150 s).
QUEUE_SIZE_PER_BATCH_SLOT = 2


class ConfigError(ValueError):
    """A config the engine refuses; the message names the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _Lenient(BaseModel):
    """An LLM-API section: we type what we read; TensorRT-LLM judges the rest."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


# trtllm-serve's defaults where the YAML is silent: its CLI flags default to BuildConfig's
# max_batch_size 2048 and max_num_tokens 8192 (tensorrt_llm/commands/serve.py `get_llm_args`,
# `max_batch_size: int = BuildConfig.max_batch_size`, ...); max_seq_len None = deduced from
# the checkpoint (its config.json max_position_embeddings).
DEFAULTS = {"max_batch_size": 2048, "max_num_tokens": 8192}

# Top-level `TorchLlmArgs` fields of TensorRT-LLM 1.2 (tensorrt_llm/llmapi/llm_args.py) that we
# know of. Only for the warning about keys we do not know; never a refusal.
KNOWN_LLM_API_KEYS = frozenset({
    "backend", "tensor_parallel_size", "pipeline_parallel_size", "context_parallel_size", "gpus_per_node",
    "moe_tensor_parallel_size", "moe_expert_parallel_size", "moe_cluster_parallel_size",
    "enable_attention_dp", "attention_dp_config", "enable_lm_head_tp_in_adp", "cp_config", "dtype",
    "revision", "tokenizer_revision", "tokenizer_mode", "skip_tokenizer_init", "trust_remote_code",
    "load_format", "enable_lora", "lora_config", "enable_chunked_prefill", "guided_decoding_backend",
    "batched_logits_processor", "iter_stats_max_iterations", "request_stats_max_iterations",
    "peft_cache_config", "scheduler_config", "cache_transceiver_config", "sparse_attention_config",
    "speculative_config", "max_batch_size", "max_input_len", "max_seq_len", "max_beam_width",
    "max_num_tokens", "gather_generation_logits", "num_postprocess_workers", "postprocess_tokenizer_dir",
    "reasoning_parser", "decoding_config", "otlp_traces_endpoint", "return_perf_metrics",
    "perf_metrics_max_requests", "orchestrator_type", "kv_cache_config", "garbage_collection_gen0_threshold",
    "cuda_graph_config", "attn_backend", "moe_config", "sampler_type", "enable_iter_perf_stats",
    "enable_iter_req_stats", "print_iter_log", "batch_wait_timeout_ms", "batch_wait_timeout_iters",
    "batch_wait_max_tokens_ratio", "torch_compile_config", "enable_autotuner", "enable_layerwise_nvtx_marker",
    "enable_min_latency", "stream_interval", "force_dynamic_quantization", "allreduce_strategy",
    "checkpoint_format", "kv_connector_config", "mm_encoder_only", "enable_sleep", "disable_overlap_scheduler",
    "fail_fast_on_attention_window_too_large", "env_overrides", "build_config",
})

# LLM-API keys the CPU reference engine acts on; every other LLM-API key is reported as ignored there.
REFERENCE_ENGINE_KEYS = frozenset({"max_batch_size", "max_num_tokens", "max_seq_len", "enable_chunked_prefill",
                                   "speculative_config"})


class SpeculativeConfig(_Lenient):
    """`speculative_config` with `decoding_type: Eagle` (EAGLE-3 on the PyTorch backend).

    TensorRT-LLM 1.2.0 dispatches `Eagle` only (llm_args.py `DecodingBaseConfig.from_dict`);
    `Eagle3` arrived in a later release. Both are accepted here (the CPU engine runs either);
    with `engine: trtllm` the installed TensorRT-LLM accepts or refuses the name itself.
    """

    decoding_type: Literal["Eagle", "Eagle3"]
    max_draft_len: int
    speculative_model_dir: str | None = Field(default=None, alias="speculative_model")
    max_concurrency: int | None = None
    draft_len_schedule: dict[int, int] | None = None
    eagle3_one_model: bool = True
    eagle3_layers_to_capture: list[int] | None = None
    allow_advanced_sampling: bool | None = None

    @field_validator("max_draft_len")
    @classmethod
    def _positive_draft_len(cls, value: int) -> int:
        if value <= 0:
            raise ValueError(f"must be >= 1, got {value}")
        return value

    @model_validator(mode="after")
    def _draft_limits(self) -> "SpeculativeConfig":
        check_draft_limits(self.max_draft_len, self.max_concurrency, self.draft_len_schedule)
        return self

    def options(self) -> dict[str, Any]:
        """The section as written in the YAML (aliases kept, nothing added)."""
        return self.model_dump(by_alias=False, exclude_unset=True)


class ReferenceEngineOptions(_Strict):
    """Knobs of the CPU reference engine only (under the `reference:` key)."""

    draft_enabled: bool = True            # False = target-only decoding (for A/B benchmarks)
    # Linear layers' format (python_backend/reference/fast_linear.py): float32 = exact numpy;
    # int8 / q4 = block-quantized onnxruntime kernels, 3-4x faster at 1-16 rows per step.
    weights: Literal["float32", "int8", "q4"] = "float32"


class EngineConfig(_Strict):
    # -- serving keys (ours) --
    engine: Literal["reference", "trtllm", "simulated"] = "reference"   # simulated: `model` names its profile
    model: str
    tokenizer: str | None = None
    chat_format: Literal["chatml", "harmony", "qwen3"] = "chatml"
    reasoning_effort: Literal["low", "medium", "high"] | None = None
    reference: ReferenceEngineOptions = ReferenceEngineOptions()
    # admission (python_backend/admission.py): requests waiting beyond the running batch;
    # one more is refused at once as busy. None = QUEUE_SIZE_PER_BATCH_SLOT x max_batch_size.
    max_queue_size: int | None = Field(default=None, ge=0)
    # a reference engine step running longer than this (or a dead engine thread) fails the model;
    # generous: a full 8192-token prefill is ~2.2 TFLOP, ~17 s at the ~130 GFLOP/s of docs/interface.md §2
    # on 2 cores, and several times that on a busy machine
    watchdog_timeout_s: float = Field(default=300.0, gt=0)
    # -- LLM-API fields the CPU engine and the request checks read (resolved; DEFAULTS where silent) --
    max_batch_size: int = DEFAULTS["max_batch_size"]
    max_num_tokens: int = DEFAULTS["max_num_tokens"]
    max_seq_len: int | None = None     # None: not set and not deducible from the checkpoint
    enable_chunked_prefill: bool = False
    speculative_config: SpeculativeConfig | None = None
    # -- the LLM-API part as written (everything but the serving keys), for TensorRT-LLM --
    llm_api_options: dict[str, Any] = Field(default_factory=dict, exclude=True)
    source_path: str | None = Field(default=None, exclude=True)

    @field_validator("max_batch_size", "max_num_tokens", "max_seq_len")
    @classmethod
    def _positive(cls, value: int | None) -> int | None:
        if value is not None and value <= 0:
            raise ValueError(f"must be >= 1, got {value}")
        return value

    @property
    def queue_limit(self) -> int:
        """`max_queue_size`, its default resolved."""
        if self.max_queue_size is not None:
            return self.max_queue_size
        return QUEUE_SIZE_PER_BATCH_SLOT * self.max_batch_size

    @property
    def tokenizer_dir(self) -> str:
        return self.tokenizer or self.model

    @property
    def draft_len(self) -> int:
        """Draft tokens per step; 0 when drafting is off."""
        if self.speculative_config is None or not self.reference.draft_enabled:
            return 0
        return self.speculative_config.max_draft_len

    def ignored_keys(self) -> list[str]:
        """LLM-API keys present in the file that the CPU reference engine does not act on."""
        if self.engine != "reference":
            return []
        return sorted(set(self.llm_api_options) - REFERENCE_ENGINE_KEYS)

    def unknown_llm_api_keys(self) -> list[str]:
        """LLM-API keys that are not TensorRT-LLM 1.2 fields we know of (a warning, not an error)."""
        return sorted(set(self.llm_api_options) - KNOWN_LLM_API_KEYS)

    def load_warnings(self) -> list[str]:
        """What to log at load about keys this config names but we cannot vouch for."""
        return [f"{key}: not a TensorRT-LLM 1.2 LLM-API field known to this project; passed to TensorRT-LLM "
                "as written (it validates its own keys when installed), ignored by the reference engine"
                for key in self.unknown_llm_api_keys()]


SERVING_KEYS = tuple(name for name in EngineConfig.model_fields
                     if name not in {"max_batch_size", "max_num_tokens", "max_seq_len", "enable_chunked_prefill",
                                     "speculative_config", "llm_api_options", "source_path"})


def _format_validation_error(err: ValidationError) -> str:
    parts = []
    for item in err.errors():
        key = ".".join(str(p) for p in item["loc"])
        message = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
        parts.append(f"{key}: {message}")
    return "; ".join(parts)


def parse_engine_config(raw: dict[str, Any], base_dir: str | Path | None = None) -> EngineConfig:
    """Validate a loaded YAML dict; resolve relative paths against `base_dir`."""
    if not isinstance(raw, dict):
        raise ConfigError(f"engine config must be a mapping, got {type(raw).__name__}")
    serving = {key: value for key, value in raw.items() if key in SERVING_KEYS}
    llm_api = {key: value for key, value in raw.items() if key not in SERVING_KEYS}
    for key in llm_api:
        if key not in KNOWN_LLM_API_KEYS:
            close = difflib.get_close_matches(key, SERVING_KEYS, n=1, cutoff=0.8)
            if close:   # a misspelt serving key would otherwise pass as an LLM-API option
                raise ConfigError(f"{key}: unknown key (did you mean the serving key {close[0]!r}?)")
    typed = {key: llm_api[key] for key in REFERENCE_ENGINE_KEYS if key in llm_api}
    try:
        config = EngineConfig(**serving, **typed, llm_api_options=llm_api)
    except ValidationError as err:
        raise ConfigError(f"invalid engine config: {_format_validation_error(err)}") from None
    except ValueError as err:    # check_draft_limits outside pydantic's wrapping
        raise ConfigError(str(err)) from None
    if base_dir is not None:
        config = _resolve_paths(config, Path(base_dir))
    if config.max_seq_len is None:   # once the model path is resolved
        config.max_seq_len = _checkpoint_max_seq_len(config.model)
    return config


def _checkpoint_max_seq_len(model_dir: str) -> int | None:
    """What TensorRT-LLM deduces when max_seq_len is not set: the checkpoint's context length
    (None when the checkpoint does not say; the engines then refuse to start, naming max_seq_len)."""
    try:
        checkpoint = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    length = checkpoint.get("max_position_embeddings") if isinstance(checkpoint, dict) else None
    return length if isinstance(length, int) and length > 0 else None


def _resolve_paths(config: EngineConfig, base_dir: Path) -> EngineConfig:
    def resolve(path: str | None) -> str | None:
        if path is None:
            return None
        return str((base_dir / Path(path).expanduser()).resolve())

    updates: dict[str, Any] = {"model": resolve(config.model), "tokenizer": resolve(config.tokenizer)}
    options = dict(config.llm_api_options)
    spec = config.speculative_config
    if spec is not None and spec.speculative_model_dir:
        draft = resolve(spec.speculative_model_dir)
        updates["speculative_config"] = spec.model_copy(update={"speculative_model_dir": draft})
        section = dict(options["speculative_config"])
        key = "speculative_model" if "speculative_model" in section else "speculative_model_dir"
        section[key] = draft
        options["speculative_config"] = section
    resolved = config.model_copy(update=updates)
    resolved.llm_api_options = options
    return resolved


def load_engine_config(path: str | Path) -> EngineConfig:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"engine config not found: {path}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"engine config {path} is not valid YAML: {err}") from None
    config = parse_engine_config(raw or {}, base_dir=path.parent)
    config.source_path = str(path)
    return config
