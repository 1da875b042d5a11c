"""Our `protocol.SamplingParams` -> `tensorrt_llm.SamplingParams` (1.2 field names).

- Greedy (temperature 0 or top_k 1) is sent as `top_k=1`: TensorRT-LLM has no temperature 0;
  its greedy path is top-k 1 (with top_k and top_p unset it would also be greedy, so a
  sampling request always sends top_p).
- Whether sampling is honoured under Eagle is the engine's call (trtllm/features.py): a request
  TensorRT-LLM would silently decode greedily is refused there, never served greedy.
- end_id -1 (our "no end id") is `ignore_eos=True`; the chat format's other turn-ending ids
  (Harmony's <|call|>, ...) join `stop_token_ids` unless the request ignores eos.
- bad words: one-token words go as `bad_token_ids`; longer ones as `bad` strings, which
  TensorRT-LLM tokenizes with the checkpoint's tokenizer (the API takes no id sequences).
- `detokenize=False`: we read token ids; the text is made in postprocessing.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from python_backend.protocol import SamplingParams


def trtllm_sampling_kwargs(params: SamplingParams, *, eos_token_id: int, extra_stop_token_ids: Sequence[int],
                           decode: Callable[[Sequence[int]], str]) -> dict[str, Any]:
    """Keyword arguments for `tensorrt_llm.SamplingParams`."""
    kwargs: dict[str, Any] = {"max_tokens": params.max_tokens, "return_perf_metrics": True, "detokenize": False}
    if params.greedy:
        kwargs["top_k"] = 1
    else:
        kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or None)
    if params.seed is not None:
        kwargs["seed"] = params.seed
    ignore_eos = params.ignore_eos or params.end_id == -1
    if ignore_eos:
        kwargs["ignore_eos"] = True
    else:
        kwargs["end_id"] = eos_token_id if params.end_id is None else params.end_id
    if params.pad_id is not None and params.pad_id >= 0:
        kwargs["pad_id"] = params.pad_id
    if params.min_tokens > 0:
        kwargs["min_tokens"] = params.min_tokens
    stops = list(params.stop_token_ids) + ([] if ignore_eos else list(extra_stop_token_ids))
    stops = [t for t in dict.fromkeys(stops) if t != kwargs.get("end_id")]
    if stops:
        kwargs["stop_token_ids"] = stops
    single = [words[0] for words in params.bad_words_ids if len(words) == 1]
    longer = [decode(words) for words in params.bad_words_ids if len(words) > 1]
    if single:
        kwargs["bad_token_ids"] = single
    if longer:
        kwargs["bad"] = longer
    return kwargs
