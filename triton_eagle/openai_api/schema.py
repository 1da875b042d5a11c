"""OpenAI request bodies -> ensemble inputs. What we cannot honour is refused with a 400 naming
the field, never ignored; values the ensemble validates (max_tokens range, temperature, stop
strings, messages) are passed on, so each rule lives in one place and its message names the
OpenAI field (see `openai_field`).

trtllm-serve's request models are the precedent for the extensions and rules kept here
(NVIDIA/TensorRT-LLM tensorrt_llm/serve/openai_protocol.py, commit 0076e93): unknown fields
refused (`extra="forbid"`), `top_k` and `min_tokens` beside OpenAI's fields,
`stream_options.continuous_usage_stats`, and stream_options only with `stream: true`.
"""
from __future__ import annotations

import json
import re
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from triton_eagle.openai_api.errors import APIError

# OpenAI field -> (ensemble input, Triton datatype): NVIDIA's current input names (docs/interface.md §1).
ENSEMBLE_INPUTS = {
    "messages": ("messages", "BYTES"),
    "prompt": ("text_input", "BYTES"),
    "max_tokens": ("max_tokens", "INT32"),
    "stream": ("stream", "BOOL"),
    "temperature": ("temperature", "FP32"),
    "top_p": ("top_p", "FP32"),
    "top_k": ("top_k", "INT32"),
    "seed": ("seed", "UINT64"),
    "min_tokens": ("min_tokens", "INT32"),
    "stop": ("stop_words", "BYTES"),
    "reasoning_effort": ("reasoning_effort", "BYTES"),
    "presence_penalty": ("presence_penalty", "FP32"),
    "frequency_penalty": ("frequency_penalty", "FP32"),
}
_OPENAI_FIELD = {ensemble: field for field, (ensemble, _) in ENSEMBLE_INPUTS.items()}
_NUMPY = {"BYTES": np.object_, "INT32": np.int32, "BOOL": bool, "FP32": np.float32, "UINT64": np.uint64}
UINT64_MAX = 2**64 - 1
_TRITON_PREFIX = re.compile(r"^in ensemble '[^']*', ")   # Triton's wrapping of a step's error
_LEADING_NAME = re.compile(r"^([a-z_]+)\b")


def openai_field(ensemble_message: str) -> tuple[str, str | None]:
    """An ensemble error (`in ensemble 'ensemble', stop_words: ...`, `messages[1].role: ...`,
    `temperature must be ...`) in OpenAI's names: (message, the OpenAI field it names or None)."""
    message = _TRITON_PREFIX.sub("", ensemble_message, count=1)
    match = _LEADING_NAME.match(message)
    if match is None or match.group(1) not in _OPENAI_FIELD:
        return message, None
    field = _OPENAI_FIELD[match.group(1)]
    return field + message[match.end(1):], field


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False
    # vLLM's extension: usage (cumulative) on every chunk, so a client can time tokens per chunk
    continuous_usage_stats: bool = False


class _Common(BaseModel):
    """Fields both endpoints share. Unknown fields are refused (`extra="forbid"`)."""

    model_config = ConfigDict(extra="forbid")

    model: str
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None          # vLLM / trtllm-serve extension
    min_tokens: int | None = None     # vLLM / trtllm-serve extension
    seed: int | None = Field(default=None, ge=0, le=UINT64_MAX)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    presence_penalty: float | None = None    # the ensemble accepts only the neutral 0
    frequency_penalty: float | None = None
    user: str | None = None                  # an end-user id for the caller's records; changes nothing

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int) -> int:
        if value != 1:
            raise ValueError(f"only n=1 is supported, got {value}")
        return value

    @model_validator(mode="after")
    def _stream_options_need_stream(self):
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options: only allowed when stream is true")
        return self

    def _sampling_fields(self) -> dict[str, Any]:
        stop = [self.stop] if isinstance(self.stop, str) else self.stop
        # the ensemble always streams: a non-streamed ensemble request sends nothing until its end, so
        # postprocessing could not see a client's cancellation (the engine model, under an ensemble,
        # never sees it in Triton 2.51); a non-streamed OpenAI answer is the deltas joined
        fields = {"max_tokens": self.max_tokens, "stream": True, "temperature": self.temperature,
                  "top_p": self.top_p, "top_k": self.top_k, "seed": self.seed, "min_tokens": self.min_tokens,
                  "stop": stop or None, "presence_penalty": self.presence_penalty,
                  "frequency_penalty": self.frequency_penalty}
        return {name: value for name, value in fields.items() if value is not None}

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    @property
    def continuous_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.continuous_usage_stats


class ChatCompletionRequest(_Common):
    # each message's role and content (a string or text parts) are the ensemble's to check
    messages: list[Any]
    max_completion_tokens: int | None = None
    reasoning_effort: str | None = None   # low | medium | high, Harmony only: the ensemble judges it
    logprobs: Literal[False] | None = None
    top_logprobs: None = None

    @model_validator(mode="after")
    def _one_length_limit(self):
        if (self.max_tokens is not None and self.max_completion_tokens is not None
                and self.max_tokens != self.max_completion_tokens):
            raise ValueError("max_completion_tokens: differs from max_tokens; give one of them")
        return self

    def ensemble_fields(self) -> dict[str, Any]:
        """OpenAI-named fields to send (ENSEMBLE_INPUTS maps them to ensemble inputs)."""
        fields = self._sampling_fields()
        if self.max_completion_tokens is not None:
            fields["max_tokens"] = self.max_completion_tokens
        fields["messages"] = json.dumps(self.messages)
        if self.reasoning_effort is not None:
            fields["reasoning_effort"] = self.reasoning_effort
        return fields


class CompletionRequest(_Common):
    prompt: str | list[str]
    logprobs: Literal[0] | None = None
    echo: Literal[False] = False
    best_of: Literal[1] | None = None
    suffix: None = None

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value):
        if isinstance(value, list):
            if len(value) != 1:
                raise ValueError(f"send one prompt per request, got a list of {len(value)}")
            return value[0]
        return value

    def ensemble_fields(self) -> dict[str, Any]:
        return {"prompt": self.prompt, **self._sampling_fields()}


def parse_request(model: type[_Common], body: Any):
    """The validated request, or a 400 APIError naming the first offending field."""
    if not isinstance(body, dict):
        raise APIError(400, f"the request body must be a JSON object, got {type(body).__name__}")
    try:
        return model.model_validate(body)
    except ValidationError as err:
        first = err.errors()[0]
        location = ".".join(str(part) for part in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "not supported by this server"
        param = location.split(".", 1)[0] or None
        if ":" in message and not location:   # a model-level rule names its own field
            param = message.split(":", 1)[0]
            raise APIError(400, message, param=param)
        raise APIError(400, f"{location}: {message}", param=param)


def ensemble_inputs(fields: dict[str, Any]):
    """tritonclient.grpc InferInputs, shaped [1, n] (the ensemble's batch dimension)."""
    from tritonclient.grpc import InferInput

    inputs = []
    for field, value in fields.items():
        name, datatype = ENSEMBLE_INPUTS[field]
        values = value if isinstance(value, list) else [value]
        if datatype == "BYTES":
            values = [v.encode("utf-8") for v in values]
        array = np.array([values], dtype=_NUMPY[datatype])
        tensor = InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def chat_body(fields: dict[str, Any], model: str) -> dict[str, Any]:
    """A /v1/chat/completions body for ensemble request fields (triton_eagle.client.request_fields'
    names): `text_input` becomes one user message, the rest take their OpenAI names."""
    body: dict[str, Any] = {"model": model}
    for name, value in fields.items():
        if name == "text_input":
            body["messages"] = [{"role": "user", "content": value}]
        elif name == "messages":
            body["messages"] = json.loads(value) if isinstance(value, str) else value
        else:
            body[_OPENAI_FIELD[name]] = value
    return body
