"""One engine config for both engines: trtllm-serve's `--extra_llm_api_options`
YAML (TensorRT-LLM 1.2 LLM API field names) plus a few serving keys of ours.

Parsed once, at model load, into typed objects that refuse unknown keys, so a
typo fails at start-up naming the key. Relative paths resolve against the
YAML file's folder.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from python_backend.reference.draft_policy import check_draft_limits

# Keys of ours; everything else in the file is a TensorRT-LLM LLM-API argument.
SERVING_KEYS = ("engine", "model", "tokenizer", "chat_format", "reasoning_effort", "reference")

# TensorRT-LLM 1.2 `TorchLlmArgs` top-level fields that the reference engine has
# no use for (GPU, parallelism, kernels, scheduling knobs). Accepted, reported
# as ignored on the CPU; the trtllm engine passes them through.
TRTLLM_ONLY_KEYS = frozenset({
    "backend", "tensor_parallel_size", "tp_size", "pipeline_parallel_size", "pp_size",
    "context_parallel_size", "gpus_per_node", "moe_tensor_parallel_size",
    "moe_expert_parallel_size", "moe_cluster_parallel_size", "enable_attention_dp",
    "enable_lm_head_tp_in_adp", "cp_config", "dtype", "revision", "tokenizer_revision",
    "tokenizer_mode", "skip_tokenizer_init", "trust_remote_code", "load_format",
    "enable_lora", "lora_config", "enable_chunked_prefill", "guided_decoding_backend",
    "iter_stats_max_iterations", "request_stats_max_iterations", "peft_cache_config",
    "scheduler_config", "cache_transceiver_config", "sparse_attention_config",
    "max_input_len", "max_beam_width", "gather_generation_logits",
    "num_postprocess_workers", "postprocess_tokenizer_dir", "reasoning_parser",
    "decoding_config", "otlp_traces_endpoint", "return_perf_metrics", "orchestrator_type",
    "garbage_collection_gen0_threshold", "cuda_graph_config", "attn_backend",
    "moe_config", "sampler_type", "enable_iter_perf_stats", "enable_iter_req_stats",
    "print_iter_log", "batch_wait_timeout_ms", "batch_wait_timeout_iters",
    "batch_wait_max_tokens_ratio", "torch_compile_config", "enable_autotuner",
    "enable_layerwise_nvtx_marker", "enable_min_latency", "stream_interval",
    "force_dynamic_quantization", "allreduce_strategy", "checkpoint_format",
    "kv_connector_config", "mm_encoder_only", "enable_sleep", "disable_overlap_scheduler",
    "fail_fast_on_attention_window_too_large", "env_overrides", "build_config",
})


class ConfigError(ValueError):
    """A config the engine refuses; the message names the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class KvCacheConfig(_Strict):
    enable_block_reuse: bool = True
    max_tokens: int | None = None
    free_gpu_memory_fraction: float | None = None
    host_cache_size: int | None = None
    enable_partial_reuse: bool = True
    copy_on_partial_reuse: bool = True
    dtype: str = "auto"
    tokens_per_block: int = 32
    max_attention_window: list[int] | None = None
    sink_token_length: int | None = None
    cross_kv_cache_fraction: float | None = None
    secondary_offload_min_priority: int | None = None
    event_buffer_max_size: int = 0
    use_uvm: bool = False
    max_gpu_total_bytes: int = 0


class SpeculativeConfig(_Strict):
    """`speculative_config` with `decoding_type: Eagle` (EAGLE-3 on the PyTorch backend)."""

    decoding_type: Literal["Eagle", "Eagle3"]
    max_draft_len: int
    max_total_draft_tokens: int | None = None
    speculative_model_dir: str | None = Field(default=None, alias="speculative_model")
    max_concurrency: int | None = None
    draft_len_schedule: dict[int, int] | None = None
    load_format: str | None = None
    acceptance_window: int | None = None
    acceptance_length_threshold: float | None = None
    eagle_choices: list[list[int]] | None = None
    greedy_sampling: bool = True
    posterior_threshold: float | None = None
    use_dynamic_tree: bool = False
    dynamic_tree_max_topK: int | None = None
    num_eagle_layers: int | None = None
    max_non_leaves_per_layer: int | None = None
    eagle3_one_model: bool = True
    eagle3_layers_to_capture: list[int] | None = None

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


class ReferenceEngineOptions(_Strict):
    """Knobs of the CPU reference engine only (under the `reference:` key)."""

    draft_enabled: bool = True            # False = target-only decoding (for A/B benchmarks)
    # Linear layers' format (python_backend/reference/fast_linear.py): float32 = exact numpy;
    # int8 / q4 = block-quantized onnxruntime kernels, 3-4x faster at 1-16 rows per step.
    weights: Literal["float32", "int8", "q4"] = "float32"


class EngineConfig(_Strict):
    # serving keys (ours)
    engine: Literal["reference", "trtllm"] = "reference"
    model: str
    tokenizer: str | None = None
    chat_format: Literal["chatml", "harmony", "qwen3"] = "chatml"
    reasoning_effort: Literal["low", "medium", "high"] | None = None
    reference: ReferenceEngineOptions = ReferenceEngineOptions()
    # TensorRT-LLM LLM-API fields the reference engine implements too
    max_batch_size: int = 32
    max_num_tokens: int = 8192
    max_seq_len: int = 8192
    speculative_config: SpeculativeConfig | None = None
    kv_cache_config: KvCacheConfig = KvCacheConfig()
    # everything in TRTLLM_ONLY_KEYS, kept verbatim for the trtllm engine
    trtllm_args: dict[str, Any] = Field(default_factory=dict, exclude=True)
    source_path: str | None = Field(default=None, exclude=True)

    @field_validator("max_batch_size", "max_num_tokens", "max_seq_len")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value <= 0:
            raise ValueError(f"must be >= 1, got {value}")
        return value

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
        """Keys present in the file that the CPU reference engine does not act on."""
        if self.engine != "reference":
            return []
        return sorted(self.trtllm_args)

    def llm_api_options(self) -> dict[str, Any]:
        """The dict trtllm-serve would load from `--extra_llm_api_options`."""
        options = dict(self.trtllm_args)
        options["max_batch_size"] = self.max_batch_size
        options["max_num_tokens"] = self.max_num_tokens
        options["max_seq_len"] = self.max_seq_len
        options["kv_cache_config"] = self.kv_cache_config.model_dump(exclude_unset=True)
        if self.speculative_config is not None:
            options["speculative_config"] = self.speculative_config.model_dump(exclude_unset=True)
        return options


def _format_validation_error(err: ValidationError) -> str:
    parts = []
    for item in err.errors():
        key = ".".join(str(p) for p in item["loc"])
        message = "unknown key (not a TensorRT-LLM 1.2 LLM-API option nor a serving key)" \
            if item["type"] == "extra_forbidden" else item["msg"]
        parts.append(f"{key}: {message}")
    return "; ".join(parts)


def parse_engine_config(raw: dict[str, Any], base_dir: str | Path | None = None) -> EngineConfig:
    """Validate a loaded YAML dict; resolve relative paths against `base_dir`."""
    if not isinstance(raw, dict):
        raise ConfigError(f"engine config must be a mapping, got {type(raw).__name__}")
    known = dict(raw)
    trtllm_args = {key: known.pop(key) for key in list(known) if key in TRTLLM_ONLY_KEYS}
    try:
        config = EngineConfig(**known, trtllm_args=trtllm_args)
    except ValidationError as err:
        raise ConfigError(f"invalid engine config: {_format_validation_error(err)}") from None
    if base_dir is not None:
        config = _resolve_paths(config, Path(base_dir))
    return config


def _resolve_paths(config: EngineConfig, base_dir: Path) -> EngineConfig:
    def resolve(path: str | None) -> str | None:
        if path is None:
            return None
        return str((base_dir / Path(path).expanduser()).resolve())

    updates: dict[str, Any] = {"model": resolve(config.model), "tokenizer": resolve(config.tokenizer)}
    if config.speculative_config and config.speculative_config.speculative_model_dir:
        updates["speculative_config"] = config.speculative_config.model_copy(
            update={"speculative_model_dir": resolve(config.speculative_config.speculative_model_dir)})
    resolved = config.model_copy(update=updates)
    resolved.trtllm_args = config.trtllm_args
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
