"""`SamplingParams` of TensorRT-LLM 1.2: a keyword-only dataclass, so an unknown argument is a
TypeError as in the real one. Fields and their defaults follow tensorrt_llm/sampling_params.py."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional, Union


@dataclass(slots=True, kw_only=True)
class SamplingParams:
    end_id: Optional[int] = None
    pad_id: Optional[int] = None
    max_tokens: int = 32
    bad: Optional[Union[str, List[str]]] = None
    bad_token_ids: Optional[List[int]] = None
    _bad_word_ids: Optional[List[List[int]]] = field(default=None, init=False, repr=False)
    stop: Optional[Union[str, List[str]]] = None
    stop_token_ids: Optional[List[int]] = None
    include_stop_str_in_output: bool = False
    _stop_word_ids: Optional[List[List[int]]] = field(default=None, init=False, repr=False)
    embedding_bias: Any = None
    logits_processor: Any = None
    apply_batched_logits_processor: bool = False
    n: int = 1
    best_of: Optional[int] = None
    use_beam_search: bool = False
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    top_p_min: Optional[float] = None
    top_p_reset_ids: Optional[int] = None
    top_p_decay: Optional[float] = None
    seed: Optional[int] = None
    temperature: Optional[float] = None
    min_tokens: Optional[int] = None
    beam_search_diversity_rate: Optional[float] = None
    repetition_penalty: Optional[float] = None
    presence_penalty: Optional[float] = None
    frequency_penalty: Optional[float] = None
    length_penalty: Optional[float] = None
    early_stopping: Optional[int] = None
    no_repeat_ngram_size: Optional[int] = None
    min_p: Optional[float] = None
    beam_width_array: Optional[List[int]] = None
    logprobs: Optional[int] = None
    prompt_logprobs: Optional[int] = None
    return_context_logits: bool = False
    return_generation_logits: bool = False
    exclude_input_from_output: bool = True
    return_encoder_output: bool = False
    return_perf_metrics: bool = False
    additional_model_outputs: Any = None
    lookahead_config: Any = None
    guided_decoding: Any = None
    ignore_eos: bool = False
    detokenize: bool = True
    add_special_tokens: bool = True
    truncate_prompt_tokens: Optional[int] = None
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True

    def __post_init__(self):
        if self.pad_id is None:
            self.pad_id = self.end_id
        self.best_of = self.best_of or self.n
        if self.best_of < self.n:
            raise ValueError(f"best_of ({self.best_of}) cannot be less than n ({self.n})")
        if self.truncate_prompt_tokens is not None and self.truncate_prompt_tokens < 1:
            raise ValueError(f"truncate_prompt_tokens must be >= 1, got {self.truncate_prompt_tokens}")

    def _setup(self, tokenizer, add_special_tokens: bool = False) -> "SamplingParams":
        if self.end_id is None:
            if tokenizer is None:
                raise ValueError("tokenizer is required to set end_id")
            self.end_id = tokenizer.eos_token_id
            self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.end_id
        for words, target in ((self.bad, "_bad_word_ids"), (self.stop, "_stop_word_ids")):
            if words is not None:
                if tokenizer is None:
                    raise ValueError("tokenizer is required to tokenize bad/stop strings")
                strs = [words] if isinstance(words, str) else words
                setattr(self, target, [tokenizer.encode(s, add_special_tokens=add_special_tokens) for s in strs])
        return self

    def _get_bad_words(self) -> List[List[int]]:
        return [[i] for i in self.bad_token_ids or []] + list(self._bad_word_ids or [])

    def _get_stop_words(self) -> List[List[int]]:
        return [[i] for i in self.stop_token_ids or []] + list(self._stop_word_ids or [])

    def to_record(self) -> dict:
        """What a contract test compares: every init field that differs from its default."""
        defaults = SamplingParams()
        return {name: getattr(self, name) for name in self.__dataclass_fields__
                if not name.startswith("_") and getattr(self, name) != getattr(defaults, name)}
