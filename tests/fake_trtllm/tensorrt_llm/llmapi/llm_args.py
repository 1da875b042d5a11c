"""TensorRT-LLM 1.2 argument models (tensorrt_llm/llmapi/llm_args.py): pydantic models that
forbid unknown keys, and update_llm_args_with_extra_dict as trtllm-serve uses it.

Rules modelled, each from upstream tensorrt_llm/llmapi/llm_args.py:
- StrictBaseModel: extra="forbid" (an unknown or misspelt key is a ValidationError naming it);
- DecodingBaseConfig.from_dict dispatches `decoding_type` "Eagle" (no "Eagle3" in 1.2.0; the
  dispatch table of the 1.2-era file lists MTP, Medusa, Eagle, Lookahead, NGram, DraftTarget,
  SaveState, UserProvided, AUTO) and pops it;
- draft_len_schedule "is enforced to contain batch_size=1 and its according draft_len equals
  max_draft_len" (DecodingBaseConfig field comment);
- EagleDecodingConfig sets num_eagle_layers and max_total_draft_tokens from max_draft_len and
  requires the draft model ("Draft model must be provided for EAGLE").
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Dict, List, Literal, Optional, Set, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator


class StrictBaseModel(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


class KvCacheConfig(StrictBaseModel):
    enable_block_reuse: bool = True
    max_tokens: Optional[int] = None
    max_attention_window: Optional[List[int]] = None
    sink_token_length: Optional[int] = None
    free_gpu_memory_fraction: Optional[float] = 0.9
    host_cache_size: Optional[int] = None
    onboard_blocks: bool = True
    cross_kv_cache_fraction: Optional[float] = None
    secondary_offload_min_priority: Optional[int] = None
    event_buffer_max_size: int = 0
    enable_partial_reuse: bool = True
    copy_on_partial_reuse: bool = True
    use_uvm: bool = False
    max_gpu_total_bytes: int = 0
    dtype: str = "auto"
    tokens_per_block: int = 32


class CudaGraphConfig(StrictBaseModel):
    batch_sizes: Optional[List[int]] = None
    max_batch_size: int = 0
    enable_padding: bool = False


class BuildConfig(StrictBaseModel):
    max_batch_size: int = 2048
    max_num_tokens: int = 8192
    max_seq_len: Optional[int] = None
    max_beam_width: int = 1


class DecodingBaseConfig(StrictBaseModel):
    max_draft_len: Optional[int] = None
    max_total_draft_tokens: Optional[int] = None
    speculative_model_dir: Optional[Union[str, Path]] = None
    max_concurrency: Optional[int] = None
    draft_len_schedule: Optional[Dict[int, int]] = None
    load_format: Optional[str] = None
    acceptance_window: Optional[int] = None
    acceptance_length_threshold: Optional[float] = None
    # "For non-greedy sampling on 1-model" (tensorrt_llm/_torch/speculative/interface.py SpecMetadata)
    allow_advanced_sampling: bool = False

    @model_validator(mode="after")
    def _check_schedule(self):
        schedule = self.draft_len_schedule
        if schedule is not None and schedule.get(1) != self.max_draft_len:
            raise ValueError(f"draft_len_schedule must contain batch_size=1 with draft_len equal to "
                             f"max_draft_len ({self.max_draft_len}), got {schedule}")
        return self

    @classmethod
    def from_dict(cls, data: dict):
        # dispatches on decoding_type and pops it from the caller's dict, as the real one does
        config_classes = {"Eagle": EagleDecodingConfig}
        config_class = config_classes.get(data.get("decoding_type"))
        if config_class is None:
            raise ValueError(f"Invalid decoding type: {data.get('decoding_type')}")
        data.pop("decoding_type")
        return config_class(**data)


class EagleDecodingConfig(DecodingBaseConfig):
    decoding_type: ClassVar[str] = "Eagle"
    eagle_choices: Optional[List[List[int]]] = None
    greedy_sampling: Optional[bool] = True
    posterior_threshold: Optional[float] = None
    use_dynamic_tree: Optional[bool] = False
    dynamic_tree_max_topK: Optional[int] = None
    num_eagle_layers: Optional[int] = None
    max_non_leaves_per_layer: Optional[int] = None
    eagle3_one_model: Optional[bool] = True
    eagle3_layers_to_capture: Optional[Set[int]] = None

    @model_validator(mode="after")
    def _check(self):
        if not self.max_draft_len:
            raise ValueError("max_draft_len must be > 0 for Eagle")
        if self.speculative_model_dir is None:
            raise ValueError("Draft model must be provided for EAGLE")
        self.num_eagle_layers = self.max_draft_len
        self.max_total_draft_tokens = self.max_draft_len
        return self


class TorchLlmArgs(StrictBaseModel):
    """The PyTorch backend's LLM arguments (1.2 field names; types kept loose where we never look)."""

    model: Union[str, Path]
    tokenizer: Optional[Any] = None
    tokenizer_mode: Literal["auto", "slow"] = "auto"
    skip_tokenizer_init: bool = False
    trust_remote_code: bool = False
    tensor_parallel_size: int = 1
    dtype: str = "auto"
    revision: Optional[str] = None
    tokenizer_revision: Optional[str] = None
    pipeline_parallel_size: int = 1
    context_parallel_size: int = 1
    gpus_per_node: Optional[int] = None
    moe_cluster_parallel_size: Optional[int] = None
    moe_tensor_parallel_size: Optional[int] = None
    moe_expert_parallel_size: Optional[int] = None
    enable_attention_dp: bool = False
    attention_dp_config: Any = None
    enable_lm_head_tp_in_adp: bool = False
    cp_config: Optional[dict] = None
    load_format: Any = "auto"
    enable_lora: bool = False
    lora_config: Any = None
    enable_chunked_prefill: bool = False
    guided_decoding_backend: Optional[str] = None
    batched_logits_processor: Any = None
    iter_stats_max_iterations: Optional[int] = None
    request_stats_max_iterations: Optional[int] = None
    peft_cache_config: Any = None
    scheduler_config: Any = None
    cache_transceiver_config: Any = None
    sparse_attention_config: Any = None
    speculative_config: Optional[EagleDecodingConfig] = None
    max_batch_size: Optional[int] = None
    max_input_len: Optional[int] = None
    max_seq_len: Optional[int] = None
    max_beam_width: Optional[int] = None
    max_num_tokens: Optional[int] = None
    gather_generation_logits: bool = False
    num_postprocess_workers: int = 0
    postprocess_tokenizer_dir: Optional[str] = None
    reasoning_parser: Optional[str] = None
    decoding_config: Any = None
    otlp_traces_endpoint: Optional[str] = None
    return_perf_metrics: bool = False
    perf_metrics_max_requests: int = 0
    orchestrator_type: Optional[str] = None
    kv_cache_config: KvCacheConfig = Field(default_factory=KvCacheConfig)
    backend: Optional[str] = None
    garbage_collection_gen0_threshold: int = 20000
    cuda_graph_config: Optional[CudaGraphConfig] = Field(default_factory=CudaGraphConfig)
    attn_backend: str = "TRTLLM"
    moe_config: Any = None
    sampler_type: Any = "auto"
    enable_iter_perf_stats: bool = False
    enable_iter_req_stats: bool = False
    print_iter_log: bool = False
    batch_wait_timeout_ms: float = 0
    batch_wait_timeout_iters: int = 0
    batch_wait_max_tokens_ratio: float = 0
    torch_compile_config: Any = None
    enable_autotuner: bool = True
    enable_layerwise_nvtx_marker: bool = False
    enable_min_latency: bool = False
    stream_interval: int = 1
    force_dynamic_quantization: bool = False
    allreduce_strategy: Optional[str] = "AUTO"
    checkpoint_format: Optional[str] = None
    kv_connector_config: Any = None
    mm_encoder_only: bool = False
    enable_sleep: bool = False
    disable_overlap_scheduler: bool = False
    fail_fast_on_attention_window_too_large: bool = False
    env_overrides: Optional[Dict[str, str]] = None

    @model_validator(mode="after")
    def _check(self):
        if self.backend not in (None, "pytorch"):
            raise ValueError(f"TorchLlmArgs serves the pytorch backend, got {self.backend!r}")
        return self


def update_llm_args_with_extra_dict(llm_args: Dict, llm_args_dict: Dict,
                                   extra_llm_api_options: Optional[str] = None) -> Dict:
    """Convert the YAML's typed sections, then let the YAML override trtllm-serve's arguments."""
    if "speculative_config" in llm_args_dict:
        llm_args_dict["speculative_config"] = DecodingBaseConfig.from_dict(llm_args_dict["speculative_config"])
    if "build_config" in llm_args_dict:
        llm_args_dict["build_config"] = BuildConfig(**llm_args_dict["build_config"])
    return llm_args | llm_args_dict
