"""trtllm-serve imports update_llm_args_with_extra_dict from here."""
from tensorrt_llm.llmapi.llm_args import update_llm_args_with_extra_dict  # noqa: F401
