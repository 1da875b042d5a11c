"""The `preprocessing` Triton model: every text input is checked here, before the
decoupled engine model, because an error after it would leak the ensemble request
(docs/interface.md §1; reference/triton-cpu.md).

`preprocess()` is the whole job on plain numpy arrays; the Triton class only moves
tensors in and out. Errors start with the *ensemble* input's name, since that is
what the client sent: "text_input: must not be empty".
"""
from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ensemble.chat import InputError, decode_utf8, parse_messages
from ensemble.triton_io import declare_tensors, engine_config_path
from python_backend.prompt_limits import PromptLimits

try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # outside tritonserver (unit tests): the plain functions still work
    pb_utils = None

DEFAULT_MAX_TOKENS = 128
MAX_STOP_STRINGS = 16
MAX_STOP_STRING_BYTES = 256   # each one widens the context every streamed response carries (§3)
# model parameter: "true" renders text_input as one user message with the chat template; off by
# default, so text_input is the raw prompt as in NVIDIA's preprocessing (chats go in `messages`)
TEXT_INPUT_AS_USER_MESSAGE = "text_input_as_user_message"

# preprocessing input -> (Triton type, dims without batch, the ensemble input it comes from)
INPUTS: dict[str, tuple[str, list[int], str]] = {
    "QUERY": ("TYPE_STRING", [1], "text_input"),
    "MESSAGES": ("TYPE_STRING", [1], "messages"),
    "REASONING_EFFORT": ("TYPE_STRING", [1], "reasoning_effort"),   # low | medium | high (Harmony)
    "REQUEST_OUTPUT_LEN": ("TYPE_INT32", [1], "max_tokens"),
    "STOP_WORDS_DICT": ("TYPE_STRING", [-1], "stop_words"),
    "BAD_WORDS_DICT": ("TYPE_STRING", [-1], "bad_words"),
    "END_ID": ("TYPE_INT32", [1], "end_id"),
    "PAD_ID": ("TYPE_INT32", [1], "pad_id"),
    # NVIDIA's ensemble inputs that we accept only at their neutral value (see NEUTRAL),
    # checked here so clients get the error before any engine work
    "LENGTH_PENALTY": ("TYPE_FP32", [1], "length_penalty"),
    "REPETITION_PENALTY": ("TYPE_FP32", [1], "repetition_penalty"),
    "PRESENCE_PENALTY": ("TYPE_FP32", [1], "presence_penalty"),
    "FREQUENCY_PENALTY": ("TYPE_FP32", [1], "frequency_penalty"),
    "BEAM_WIDTH": ("TYPE_INT32", [1], "beam_width"),
    "NUM_RETURN_SEQUENCES": ("TYPE_INT32", [1], "num_return_sequences"),
    "RETURN_LOG_PROBS": ("TYPE_BOOL", [1], "return_log_probs"),
    # accepted for compatibility; the counts are sent on every response anyway
    "RETURN_NUM_INPUT_TOKENS": ("TYPE_BOOL", [1], "return_num_input_tokens"),
    "RETURN_NUM_OUTPUT_TOKENS": ("TYPE_BOOL", [1], "return_num_output_tokens"),
}

# input -> (the only value served, why)
NEUTRAL: dict[str, tuple[float | int | bool, str]] = {
    "LENGTH_PENALTY": (1.0, "beam search is not served"),
    "REPETITION_PENALTY": (1.0, "not implemented by the speculative engines"),
    "PRESENCE_PENALTY": (0.0, "not implemented by the speculative engines"),
    "FREQUENCY_PENALTY": (0.0, "not implemented by the speculative engines"),
    "BEAM_WIDTH": (1, "beam search is not served"),
    "NUM_RETURN_SEQUENCES": (1, "send one request per sequence"),
    "RETURN_LOG_PROBS": (False, "log probabilities are not returned"),
}

OUTPUTS: dict[str, tuple[str, list[int]]] = {
    "INPUT_ID": ("TYPE_INT32", [-1]),
    "REQUEST_INPUT_LEN": ("TYPE_INT32", [1]),
    "REQUEST_OUTPUT_LEN": ("TYPE_INT32", [1]),
    "STOP_STRINGS": ("TYPE_STRING", [-1]),
    "BAD_WORDS_IDS": ("TYPE_INT32", [2, -1]),
    "OUT_END_ID": ("TYPE_INT32", [1]),
    "OUT_PAD_ID": ("TYPE_INT32", [1]),
    "REQUEST_UUID": ("TYPE_STRING", [1]),
}


@dataclass(frozen=True)
class PreprocessedRequest:
    input_ids: list[int]
    max_tokens: int
    stop_strings: tuple[str, ...]
    bad_words_ids: np.ndarray        # (2, n) int32: NVIDIA's flattened ids + end offsets
    end_id: int
    pad_id: int
    request_uuid: str                # uuid4 hex: the id the cancel path uses (§1, stop form)

    def output_arrays(self) -> dict[str, np.ndarray]:
        """The output tensors, each with the batch dim of 1."""
        return {
            "INPUT_ID": np.array([self.input_ids], dtype=np.int32),
            "REQUEST_INPUT_LEN": np.array([[len(self.input_ids)]], dtype=np.int32),
            "REQUEST_OUTPUT_LEN": np.array([[self.max_tokens]], dtype=np.int32),
            "STOP_STRINGS": np.array([[s.encode("utf-8") for s in self.stop_strings]],
                                     dtype=object).reshape(1, -1),
            "BAD_WORDS_IDS": self.bad_words_ids.reshape(1, 2, -1).astype(np.int32),
            "OUT_END_ID": np.array([[self.end_id]], dtype=np.int32),
            "OUT_PAD_ID": np.array([[self.pad_id]], dtype=np.int32),
            "REQUEST_UUID": np.array([[self.request_uuid.encode()]], dtype=object),
        }


def preprocess(inputs: Mapping[str, np.ndarray], tokenizer, limits: PromptLimits,
               text_input_as_user_message: bool = False) -> PreprocessedRequest:
    """Validate one request's arrays (name -> array with the batch dim) and build the engine's inputs.

    text_input is the raw prompt, tokenized as NVIDIA's preprocessing does (`tokenizer.encode(query,
    add_special_tokens=...)` with its default True: triton_backend/all_models/inflight_batcher_llm/
    preprocessing/1/model.py `_create_request`); no chat template unless the model parameter
    text_input_as_user_message is on. `messages` is a chat, rendered with the template.
    Raises InputError whose message starts with the ensemble input's name.
    """
    reader = _Reader(inputs)
    query = reader.scalar("QUERY")
    messages = reader.scalar("MESSAGES")
    if query is None and messages is None:
        raise InputError("text_input: required: send the raw prompt as text_input, or a chat as messages")
    if query is not None and messages is not None:
        raise InputError("text_input, messages: send only one of them")
    text = chat = None
    if query is not None:
        text = decode_utf8(query, "text_input")
        if not text:
            raise InputError("text_input: must not be empty")
        prompt_from = "text_input"
        if text_input_as_user_message:
            chat, text = [{"role": "user", "content": text}], None
    else:
        prompt_from, chat = "messages", parse_messages(messages, "messages")

    for name, (neutral, why) in NEUTRAL.items():
        value = reader.scalar(name)
        if value is not None and not _equals(value, neutral):
            raise InputError(f"{INPUTS[name][2]}: only {_show(neutral)} is supported ({why}), got {_show(value)}")

    max_seq_len = limits.max_seq_len
    max_tokens = reader.integer("REQUEST_OUTPUT_LEN", default=min(DEFAULT_MAX_TOKENS, max_seq_len))
    if not 1 <= max_tokens <= max_seq_len:
        raise InputError(f"max_tokens: must be 1..{max_seq_len} (max_seq_len), got {max_tokens}")

    stop_strings = stop_strings_from(reader.texts("STOP_WORDS_DICT"))
    bad_words = bad_words_array(tokenizer, reader.texts("BAD_WORDS_DICT"))
    end_id = _token_id(reader.integer("END_ID", tokenizer.eos_token_id), "end_id", tokenizer.vocab_size)
    pad_id = _token_id(reader.integer("PAD_ID", tokenizer.pad_token_id), "pad_id", tokenizer.vocab_size)

    reasoning_effort = _reasoning_effort(reader, tokenizer)
    if text is not None:
        if reasoning_effort is not None:
            raise InputError("reasoning_effort: applies to chats (messages); text_input is a raw prompt")
        input_ids = tokenizer.encode_prompt(text)
        if not input_ids:
            raise InputError("text_input: tokenizes to no tokens")
    else:
        try:
            input_ids = tokenizer.render_chat(chat, reasoning_effort=reasoning_effort)
        except ValueError as err:   # e.g. a template that rejects the roles' order
            raise InputError(f"{prompt_from}: the chat template refused it: {err}") from None
    problem = limits.problem(len(input_ids))
    if problem:
        raise InputError(f"{prompt_from}: {problem}")
    return PreprocessedRequest(input_ids=input_ids, max_tokens=max_tokens, stop_strings=stop_strings,
                               bad_words_ids=bad_words, end_id=end_id, pad_id=pad_id,
                               request_uuid=uuid.uuid4().hex)


def _reasoning_effort(reader: "_Reader", tokenizer) -> str | None:
    """The request's reasoning effort; None (the engine config's default) when not sent or empty."""
    raw = reader.scalar("REASONING_EFFORT")
    effort = decode_utf8(raw, "reasoning_effort").strip().lower() if raw is not None else ""
    if not effort:
        return None
    accepted = tuple(getattr(tokenizer, "reasoning_efforts", ()))
    if not accepted:
        raise InputError(f"reasoning_effort: the {getattr(tokenizer, 'chat_format', 'chatml')} chat format of this "
                         "deployment has no reasoning effort setting; do not send it")
    if effort not in accepted:
        raise InputError(f"reasoning_effort: must be one of {', '.join(accepted)}, got {effort!r}")
    return effort


def stop_strings_from(words: Sequence[str]) -> tuple[str, ...]:
    """Stop strings as the engine and detokenizer use them: empty entries dropped
    (NVIDIA's clients send [""] for "none"), duplicates removed, bounded in number and size."""
    stops = tuple(dict.fromkeys(word for word in words if word))
    if len(stops) > MAX_STOP_STRINGS:
        raise InputError(f"stop_words: at most {MAX_STOP_STRINGS} stop strings, got {len(stops)}")
    for index, stop in enumerate(stops):
        size = len(stop.encode("utf-8"))
        if size > MAX_STOP_STRING_BYTES:
            raise InputError(f"stop_words[{index}]: at most {MAX_STOP_STRING_BYTES} UTF-8 bytes, got {size}")
        if "\ufffd" in stop:
            # U+FFFD is what an incomplete character decodes to mid-stream; matching it would stop early
            raise InputError(f"stop_words[{index}]: must not contain U+FFFD (the replacement character)")
    return stops


def bad_words_array(tokenizer, words: Sequence[str]) -> np.ndarray:
    """NVIDIA's bad-words format, shape (2, n): row 0 every word's ids back to back
    (padded with 0), row 1 each word's end offset (padded with -1). No words: (2, 0)."""
    word_ids = [ids for ids in (tokenizer.encode_plain(word) for word in words if word) if ids]
    flat = [token for ids in word_ids for token in ids]
    offsets = np.cumsum([len(ids) for ids in word_ids]).tolist()
    array = np.zeros((2, len(flat)), dtype=np.int32)
    array[0, :] = flat
    array[1, :] = -1
    array[1, :len(offsets)] = offsets
    return array


def _token_id(value: int, shown_name: str, vocab_size: int) -> int:
    # -1: no end id (generate until length or a stop string), as in TensorRT-LLM
    if not -1 <= value < vocab_size:
        raise InputError(f"{shown_name}: must be -1 or a token id 0..{vocab_size - 1}, got {value}")
    return value


def _equals(value, neutral) -> bool:
    if isinstance(neutral, bool):
        return bool(value) == neutral
    return math.isclose(float(value), float(neutral), abs_tol=1e-6)


def _show(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):g}"
    return str(value)


class _Reader:
    """One request's arrays; every error names the ensemble input."""

    def __init__(self, inputs: Mapping[str, np.ndarray]):
        unknown = sorted(set(inputs) - set(INPUTS))
        if unknown:
            raise InputError(f"{unknown[0]}: not an input of preprocessing")
        self.inputs = inputs

    def row(self, name: str) -> np.ndarray | None:
        """The request's values, batch dim removed and flattened."""
        value = self.inputs.get(name)
        if value is None:
            return None
        array = np.asarray(value)
        if array.ndim == 0:
            return array.reshape(-1)
        if array.shape[0] != 1:
            raise InputError(f"{INPUTS[name][2]}: batch size {array.shape[0]}; send one prompt per request "
                             f"(shape [1, ...])")
        return array[0].reshape(-1)

    def scalar(self, name: str):
        row = self.row(name)
        if row is None:
            return None
        if row.size != 1:
            raise InputError(f"{INPUTS[name][2]}: expected one value (shape [1, 1]), got {row.size}")
        return row[0]

    def integer(self, name: str, default: int) -> int:
        value = self.scalar(name)
        return default if value is None else int(value)

    def texts(self, name: str) -> list[str]:
        row = self.row(name)
        if row is None:
            return []
        shown = INPUTS[name][2]
        return [decode_utf8(item, f"{shown}[{index}]") for index, item in enumerate(row)]


class TritonPythonModel:
    """preprocessing: not decoupled; one response per request, an error response for a bad one."""

    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        return declare_tensors(auto_complete_model_config,
                               {name: (data_type, dims) for name, (data_type, dims, _) in INPUTS.items()},
                               OUTPUTS)

    def initialize(self, args):
        from ensemble.tokenizer import load_tokenizer
        from python_backend.config import load_engine_config

        model_config = json.loads(args["model_config"])
        config_path = engine_config_path(args["model_repository"], model_config)
        engine_config = load_engine_config(config_path)
        self.limits = PromptLimits.from_config(engine_config)
        self.text_input_as_user_message = _flag_parameter(model_config, TEXT_INPUT_AS_USER_MESSAGE)
        self.tokenizer = load_tokenizer(engine_config.tokenizer_dir, engine_config.chat_format,
                                        engine_config.reasoning_effort)
        pb_utils.Logger.log_info(f"preprocessing: {engine_config.chat_format} chat format, "
                                 f"tokenizer {engine_config.tokenizer_dir}, {self.limits} (from {config_path}); "
                                 f"text_input is {'one user message' if self.text_input_as_user_message else 'the raw prompt'}")

    def execute(self, requests):
        return [self._respond(request) for request in requests]

    def _respond(self, request):
        try:
            arrays = {}
            for name in INPUTS:
                tensor = pb_utils.get_input_tensor_by_name(request, name)
                if tensor is not None:
                    arrays[name] = tensor.as_numpy()
            result = preprocess(arrays, self.tokenizer, self.limits, self.text_input_as_user_message)
        except InputError as err:
            return _error_response(str(err), "INVALID_ARG")
        except Exception as err:  # a bug must cost one request, never the model
            pb_utils.Logger.log_error(f"preprocessing: internal error: {err!r}")
            return _error_response(f"preprocessing: internal error: {err}", "INTERNAL")
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor(name, array) for name, array in result.output_arrays().items()])


def _flag_parameter(model_config: dict, name: str) -> bool:
    """A true/false model parameter of config.pbtxt; absent = false; anything else refuses the load."""
    value = model_config.get("parameters", {}).get(name, {}).get("string_value", "false").strip().lower()
    if value not in ("true", "false"):
        raise ValueError(f"parameter {name}: must be \"true\" or \"false\", got {value!r}")
    return value == "true"


def _error_response(message: str, code_name: str):
    code = getattr(pb_utils.TritonError, code_name, None)
    error = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)
