"""How long a prompt may be: TensorRT-LLM's PyTorch-backend rules, applied by both engines
and by preprocessing with the same words, before any token is generated.

- `prompt_len > max_num_tokens` is refused unless `enable_chunked_prefill` is on
  (tensorrt_llm/llmapi/llm.py `BaseLLM._check_arguments`, pytorch branch, NVIDIA/TensorRT-LLM
  commit 4c05a74891e4df8066f08ed4ce14b0972abe4e25: "The sum of prompt length (...), query
  length (0) should not exceed max_num_tokens (...)").
- `max_seq_len - prompt_len` must leave at least one token to generate, and a larger
  `max_tokens` is cut to it (tensorrt_llm/executor/base_worker.py `_deduce_max_tokens`:
  "`default_max_tokens` ... must be greater than 0"; "User-specified `max_tokens` ... is greater
  than deduced `default_max_tokens` ..., using default_max_tokens instead").
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PromptLimits:
    max_seq_len: int
    max_num_tokens: int
    enable_chunked_prefill: bool = False

    @classmethod
    def from_config(cls, config) -> "PromptLimits":
        """From an EngineConfig (its resolved values)."""
        if config.max_seq_len is None:
            from python_backend.config import ConfigError

            raise ConfigError(f"max_seq_len: not set, and {config.model}/config.json gives no "
                              "max_position_embeddings to deduce it from (as trtllm-serve would); set max_seq_len")
        return cls(config.max_seq_len, config.max_num_tokens, config.enable_chunked_prefill)

    def problem(self, prompt_len: int) -> str | None:
        """Why a prompt of this length is refused (a sentence naming the limit and the
        setting that lifts it), or None when it is served."""
        if not self.enable_chunked_prefill and prompt_len > self.max_num_tokens:
            return (f"the prompt has {prompt_len} tokens, more than max_num_tokens ({self.max_num_tokens}); "
                    "without chunked prefill TensorRT-LLM refuses such a prompt: set enable_chunked_prefill: true "
                    "(or raise max_num_tokens) in the engine config, or shorten the prompt")
        if prompt_len >= self.max_seq_len:
            return (f"the prompt has {prompt_len} tokens; max_seq_len is {self.max_seq_len}, so at most "
                    f"{self.max_seq_len - 1} prompt tokens leave room to generate: raise max_seq_len in the "
                    "engine config, or shorten the prompt")
        return None

    def max_new_tokens(self, prompt_len: int, requested: int) -> int:
        """`requested`, cut to what fits in max_seq_len after the prompt (as TensorRT-LLM does)."""
        return min(requested, self.max_seq_len - prompt_len)
