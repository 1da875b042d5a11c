"""The `tensorrt_llm` model's tensors (docs/interface.md §1): declarations, request
parsing and validation, response arrays. Pure numpy, so it is tested without Triton.

Every tensor carries the leading batch dimension of `max_batch_size: 64`; a request
holds exactly one prompt. Errors name the input and the fix.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from python_backend.prompt_limits import PromptLimits
from python_backend.protocol import InvalidRequestError, SamplingParams, SpeculativeStats

# name -> (Triton data type, dims without the batch dim, optional)
INPUTS: dict[str, tuple[str, list[int], bool]] = {
    "input_ids": ("TYPE_INT32", [-1], True),          # optional only for the stop form
    "input_lengths": ("TYPE_INT32", [1], True),
    "request_output_len": ("TYPE_INT32", [1], True),  # required for generation, checked here
    "end_id": ("TYPE_INT32", [1], True),
    "pad_id": ("TYPE_INT32", [1], True),
    "runtime_top_k": ("TYPE_INT32", [1], True),
    "runtime_top_p": ("TYPE_FP32", [1], True),
    "temperature": ("TYPE_FP32", [1], True),
    "seed": ("TYPE_UINT64", [1], True),
    "min_tokens": ("TYPE_INT32", [1], True),
    "random_seed": ("TYPE_UINT64", [1], True),   # alias of seed (ALIASES)
    "min_length": ("TYPE_INT32", [1], True),     # alias of min_tokens
    "streaming": ("TYPE_BOOL", [1], True),
    "bad_words_list": ("TYPE_INT32", [2, -1], True),
    "stop_strings": ("TYPE_STRING", [-1], True),
    "request_uuid": ("TYPE_STRING", [1], True),
    "stop": ("TYPE_BOOL", [1], True),
    "return_perf_metrics": ("TYPE_BOOL", [1], True),
}

OUTPUTS: dict[str, tuple[str, list[int]]] = {
    "output_ids": ("TYPE_INT32", [-1, -1]),      # [beam=1, tokens of this response]
    "sequence_length": ("TYPE_INT32", [-1]),     # per beam: tokens in this response
    "context_ids": ("TYPE_INT32", [-1]),         # tokens just before this response's (§3)
    "request_uuid": ("TYPE_STRING", [1]),
    "finish_reason": ("TYPE_STRING", [1]),
    "stop_strings_out": ("TYPE_STRING", [-1]),
    "num_input_tokens": ("TYPE_INT32", [1]),
    "num_output_tokens": ("TYPE_INT32", [1]),
    "total_draft_tokens": ("TYPE_INT32", [1]),
    "total_accepted_draft_tokens": ("TYPE_INT32", [1]),
    "acceptance_length": ("TYPE_FP32", [1]),
    "acceptance_rate": ("TYPE_FP32", [1]),
}

# older name -> NVIDIA's current one. tensorrtllm_backend renamed them in its ensemble and
# tensorrt_llm configs (triton_backend/all_models/inflight_batcher_llm/ensemble/config.pbtxt,
# NVIDIA/TensorRT-LLM commit 2a9abd9536aa62ad3e4b9314be9286b1b1be523b: inputs "seed" and
# "min_tokens"); Triton's OpenAI frontend and genai-perf still send the old names.
ALIASES = {"random_seed": "seed", "min_length": "min_tokens"}

# numpy dtype kinds each Triton type arrives as (Triton enforces the exact type; the
# check keeps direct callers honest and names the input when they are not)
_KINDS = {"TYPE_INT32": "iu", "TYPE_UINT64": "iu", "TYPE_FP32": "f", "TYPE_BOOL": "b",
          "TYPE_STRING": "OSU"}

DEFAULT_STREAMING = False


@dataclass(frozen=True)
class GenerateRequest:
    prompt_token_ids: list[int]
    sampling_params: SamplingParams
    streaming: bool
    stop_strings: tuple[str, ...]
    request_uuid: str                # "" when the client sent none
    requested_output_len: int        # as asked; sampling_params.max_tokens may be less (max_seq_len)


@dataclass(frozen=True)
class StopRequest:
    """The `stop` form: abort the running request registered under `target`."""

    target: str


def parse_request(inputs: Mapping[str, np.ndarray], *, limits: PromptLimits,
                  vocab_size: int | None = None, request_id: str = "") -> GenerateRequest | StopRequest:
    """Turn one request's input arrays (name -> array with the batch dim) into a typed request.

    `request_id` is the Triton request id: the stop form's target when it has no
    `request_uuid`. Raises InvalidRequestError naming the input.
    """
    unknown = sorted(set(inputs) - set(INPUTS))
    if unknown:
        raise InvalidRequestError(f"{unknown[0]}: not an input of tensorrt_llm (inputs: {', '.join(INPUTS)})")
    reader = _Reader(inputs)
    request_uuid = reader.text("request_uuid", default="")

    if reader.flag("stop", default=False):
        target = request_uuid or request_id
        if not target:
            raise InvalidRequestError(
                "stop: needs request_uuid (or the request id of the request to stop)")
        return StopRequest(target)

    prompt = reader.ids("input_ids")
    if prompt is None:
        raise InvalidRequestError("input_ids: required (the prompt's token ids, INT32 [1, n])")
    input_length = reader.integer("input_lengths", default=None)
    if input_length is not None:
        if not 1 <= input_length <= len(prompt):
            raise InvalidRequestError(
                f"input_lengths must be 1..{len(prompt)} (the length of input_ids), got {input_length}")
        prompt = prompt[:input_length]
    if not prompt:
        raise InvalidRequestError("input_ids: the prompt must hold at least one token")
    if vocab_size is not None:
        outside = [t for t in prompt if not 0 <= t < vocab_size]
        if outside:
            raise InvalidRequestError(
                f"input_ids: token id {outside[0]} is outside the vocabulary (0..{vocab_size - 1})")
    elif min(prompt) < 0:
        raise InvalidRequestError(f"input_ids: token ids must be >= 0, got {min(prompt)}")
    problem = limits.problem(len(prompt))
    if problem:
        raise InvalidRequestError(f"input_ids: {problem}")
    max_seq_len = limits.max_seq_len

    output_len = reader.integer("request_output_len", default=None)
    if output_len is None:
        raise InvalidRequestError("request_output_len: required (tokens to generate, INT32 [1, 1])")
    if not 1 <= output_len <= max_seq_len:
        raise InvalidRequestError(f"request_output_len must be 1..{max_seq_len} (max_seq_len), got {output_len}")

    temperature = reader.real("temperature", default=0.0)
    if not (math.isfinite(temperature) and temperature >= 0.0):
        raise InvalidRequestError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    top_p = reader.real("runtime_top_p", default=1.0)
    if not (math.isfinite(top_p) and 0.0 < top_p <= 1.0):
        raise InvalidRequestError(f"runtime_top_p must be in (0, 1], got {top_p}")
    top_k = reader.integer("runtime_top_k", default=0)
    if top_k < 0:
        raise InvalidRequestError(f"runtime_top_k must be >= 0 (0 = off), got {top_k}")
    min_tokens = reader.aliased_integer("min_tokens", default=0)
    if min_tokens < 0:
        raise InvalidRequestError(f"min_tokens must be >= 0, got {min_tokens}")
    end_id = reader.integer("end_id", default=None)
    pad_id = reader.integer("pad_id", default=None)
    for name, value in (("end_id", end_id), ("pad_id", pad_id)):
        if value is None:
            continue
        # -1: no end id (generate until length or a stop string), as in TensorRT-LLM
        upper = vocab_size - 1 if vocab_size is not None else None
        if value < -1 or (upper is not None and value > upper):
            raise InvalidRequestError(
                f"{name} must be -1 or a token id 0..{upper if upper is not None else 'vocab-1'}, got {value}")

    params = SamplingParams(
        max_tokens=limits.max_new_tokens(len(prompt), output_len),
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=reader.aliased_integer("seed", default=None),
        end_id=end_id,
        pad_id=pad_id,
        min_tokens=min_tokens,
        bad_words_ids=reader.bad_words("bad_words_list"),
        return_perf_metrics=reader.flag("return_perf_metrics", default=True),
    )
    params.validate()
    return GenerateRequest(
        prompt_token_ids=prompt,
        sampling_params=params,
        streaming=reader.flag("streaming", default=DEFAULT_STREAMING),
        stop_strings=reader.texts("stop_strings"),
        request_uuid=request_uuid,
        requested_output_len=output_len,
    )


class _Reader:
    """Typed access to one request's arrays; every error names the input."""

    def __init__(self, inputs: Mapping[str, np.ndarray]):
        self.inputs = inputs

    def _array(self, name: str) -> np.ndarray | None:
        value = self.inputs.get(name)
        if value is None:
            return None
        array = np.asarray(value)
        data_type = INPUTS[name][0]
        if array.dtype.kind not in _KINDS[data_type]:
            raise InvalidRequestError(f"{name} must be {data_type}, got {array.dtype}")
        if array.ndim == 0 or array.shape[0] != 1:
            batch = "no batch dimension" if array.ndim == 0 else f"batch size {array.shape[0]}"
            raise InvalidRequestError(f"{name}: {batch}; send one prompt per request (shape [1, ...])")
        return array[0]

    def _scalar(self, name: str):
        array = self._array(name)
        if array is None:
            return None
        if array.size != 1:
            raise InvalidRequestError(f"{name}: expected one value (shape [1, 1]), got shape [1, {array.size}]")
        return array.reshape(-1)[0]

    def integer(self, name: str, default):
        value = self._scalar(name)
        return default if value is None else int(value)

    def aliased_integer(self, name: str, default):
        """`name` or its older alias; both sent with different values is an error naming both."""
        (alias,) = [old for old, new in ALIASES.items() if new == name]
        value, old_value = self.integer(name, default=None), self.integer(alias, default=None)
        if value is not None and old_value is not None and value != old_value:
            raise InvalidRequestError(f"{name}, {alias}: both sent with different values ({value} and {old_value}); "
                                      f"send {name} only ({alias} is its older name)")
        if value is None:
            value = old_value
        return default if value is None else value

    def real(self, name: str, default: float) -> float:
        value = self._scalar(name)
        return default if value is None else float(value)

    def flag(self, name: str, default: bool) -> bool:
        value = self._scalar(name)
        return default if value is None else bool(value)

    def text(self, name: str, default: str) -> str:
        value = self._scalar(name)
        return default if value is None else _text(name, value)

    def texts(self, name: str) -> tuple[str, ...]:
        array = self._array(name)
        if array is None:
            return ()
        return tuple(text for text in (_text(name, item) for item in array.reshape(-1)) if text)

    def ids(self, name: str) -> list[int] | None:
        array = self._array(name)
        if array is None:
            return None
        return [int(t) for t in array.reshape(-1)]

    def bad_words(self, name: str) -> tuple[tuple[int, ...], ...]:
        """NVIDIA's format: row 0 the words' ids back to back, row 1 each word's end offset,
        padded with -1 (e.g. [[5, 6, 7], [2, 3, -1]] = words (5, 6) and (7,))."""
        array = self._array(name)
        if array is None:
            return ()
        if array.ndim != 2 or array.shape[0] != 2:
            raise InvalidRequestError(f"{name}: expected shape [1, 2, n] (ids row, offsets row), "
                                      f"got [1, {', '.join(map(str, array.shape))}]")
        ids, offsets = array[0].tolist(), array[1].tolist()
        words, start = [], 0
        for end in offsets:
            if end < 0:
                break
            if not start < end <= len(ids):
                raise InvalidRequestError(
                    f"{name}: offsets must increase within 1..{len(ids)}, got {offsets}")
            words.append(tuple(int(t) for t in ids[start:end]))
            start = end
        return tuple(words)


def _text(name: str, value) -> str:
    if isinstance(value, str):
        return value
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequestError(f"{name}: not valid UTF-8") from None


def _row(values, dtype) -> np.ndarray:
    return np.asarray(values, dtype=dtype).reshape(1, -1)


def response_arrays(*, token_ids: Sequence[int], context_ids: Sequence[int], request_uuid: str,
                    finish_reason: str | None, stop_strings: Sequence[str], num_input_tokens: int,
                    num_output_tokens: int, stats: SpeculativeStats) -> dict[str, np.ndarray]:
    """One response's output arrays (each with the batch dim of 1)."""
    tokens = np.asarray(token_ids, dtype=np.int32).reshape(1, 1, -1)
    return {
        "output_ids": tokens,
        "sequence_length": np.array([[tokens.shape[-1]]], dtype=np.int32),
        "context_ids": _row(context_ids, np.int32),
        "request_uuid": np.array([[request_uuid.encode()]], dtype=object),
        "finish_reason": np.array([[(finish_reason or "").encode()]], dtype=object),
        "stop_strings_out": np.array([[text.encode() for text in stop_strings]], dtype=object).reshape(1, -1),
        "num_input_tokens": np.array([[num_input_tokens]], dtype=np.int32),
        "num_output_tokens": np.array([[num_output_tokens]], dtype=np.int32),
        "total_draft_tokens": np.array([[stats.total_draft_tokens]], dtype=np.int32),
        "total_accepted_draft_tokens": np.array([[stats.total_accepted_draft_tokens]], dtype=np.int32),
        "acceptance_length": np.array([[stats.acceptance_length]], dtype=np.float32),
        "acceptance_rate": np.array([[stats.acceptance_rate]], dtype=np.float32),
    }
