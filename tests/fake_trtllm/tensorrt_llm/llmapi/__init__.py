from tensorrt_llm.bindings.executor import CapacitySchedulerPolicy, DynamicBatchConfig, SchedulerConfig
from tensorrt_llm.llmapi.llm_args import (BuildConfig, CudaGraphConfig, EagleDecodingConfig, KvCacheConfig,
                                          TorchLlmArgs)

__all__ = ["BuildConfig", "CapacitySchedulerPolicy", "CudaGraphConfig", "DynamicBatchConfig",
           "EagleDecodingConfig", "KvCacheConfig", "SchedulerConfig", "TorchLlmArgs"]
