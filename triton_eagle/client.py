"""A small client for the `ensemble` model: gRPC streaming (tritonclient.grpc.aio) and
HTTP `generate_stream` (server-sent events), both returning the same `Generation`.

The final response is the one whose `finish_reason` is set (the engine model sends
its final flag with the last tokens), so no empty final response is needed.
"""
from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import numpy as np

STREAM_CLOSE_TIMEOUT_S = 5.0   # after the final response: the server ends the RPC at once
STAT_OUTPUTS = ("num_input_tokens", "num_output_tokens", "total_draft_tokens",
                "total_accepted_draft_tokens", "acceptance_length", "acceptance_rate")


@dataclass
class Generation:
    """One request as the client saw it."""

    deltas: list[str] = field(default_factory=list)
    arrival_s: list[float] = field(default_factory=list)   # seconds since the request was sent
    finish_reason: str = ""
    stats: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    @property
    def text(self) -> str:
        return "".join(self.deltas)

    @property
    def ttft_s(self) -> float | None:
        for delta, at in zip(self.deltas, self.arrival_s):
            if delta:
                return at
        return None

    @property
    def latency_s(self) -> float | None:
        return self.arrival_s[-1] if self.arrival_s else None


def request_fields(text: str | None = None, *, messages: list[dict] | str | None = None,
                   max_tokens: int | None = 128, stream: bool = True, temperature: float | None = None,
                   top_p: float | None = None, top_k: int | None = None, seed: int | None = None,
                   stop_words: list[str] | None = None, bad_words: list[str] | None = None,
                   min_tokens: int | None = None) -> dict[str, Any]:
    """Ensemble inputs as a name -> value dict (None = not sent). `text`: the raw prompt
    (text_input, no chat template); `messages`: a chat (rendered with the model's template)."""
    if isinstance(messages, list):
        messages = json.dumps(messages)
    fields = {"text_input": text, "messages": messages, "max_tokens": max_tokens, "stream": stream,
              "temperature": temperature, "top_p": top_p, "top_k": top_k, "seed": seed,
              "stop_words": stop_words, "bad_words": bad_words, "min_tokens": min_tokens}
    return {name: value for name, value in fields.items() if value is not None}


_DTYPES = {"text_input": "BYTES", "messages": "BYTES", "stop_words": "BYTES", "bad_words": "BYTES",
           "max_tokens": "INT32", "top_k": "INT32", "min_tokens": "INT32", "min_length": "INT32", "stream": "BOOL",
           "temperature": "FP32", "top_p": "FP32", "seed": "UINT64", "random_seed": "UINT64"}
_NUMPY = {"BYTES": np.object_, "INT32": np.int32, "BOOL": bool, "FP32": np.float32, "UINT64": np.uint64}


def grpc_inputs(fields: dict[str, Any]):
    """tritonclient InferInputs with the batch dimension the ensemble expects ([1, n])."""
    import tritonclient.grpc as grpcclient

    inputs = []
    for name, value in fields.items():
        dtype = _DTYPES[name]
        values = value if isinstance(value, list) else [value]
        if dtype == "BYTES":
            values = [v.encode() if isinstance(v, str) else v for v in values]
        array = np.array([values], dtype=_NUMPY[dtype])
        tensor = grpcclient.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def _read_response(result, generation: Generation, started: float) -> None:
    generation.arrival_s.append(time.perf_counter() - started)
    text = result.as_numpy("text_output")
    generation.deltas.append(b"".join(text.reshape(-1)).decode("utf-8") if text is not None else "")
    reason = result.as_numpy("finish_reason")
    if reason is not None and reason.size:
        generation.finish_reason = reason.reshape(-1)[0].decode()
    for name in STAT_OUTPUTS:
        value = result.as_numpy(name)
        if value is not None and value.size:
            generation.stats[name] = value.reshape(-1)[0].item()


async def stream_generate(client, fields: dict[str, Any] | list, model: str = "ensemble",
                          request_id: str = "", on_delta=None) -> Generation:
    """One request over a gRPC stream of a `tritonclient.grpc.aio` client (`fields`: a
    request_fields dict, or ready-made InferInputs)."""
    done = asyncio.Event()
    inputs = fields if isinstance(fields, list) else grpc_inputs(fields)

    async def requests():
        yield {"model_name": model, "inputs": inputs, "request_id": request_id}
        await done.wait()

    generation = Generation()
    started = time.perf_counter()
    responses = client.stream_infer(requests())
    ended = False
    try:
        async for result, error in responses:
            if error is not None:
                generation.error = str(error)
                break
            _read_response(result, generation, started)
            if on_delta is not None:
                on_delta(generation.deltas[-1])
            if generation.finish_reason:
                break
        ended = True
    finally:
        done.set()
        if not ended:   # the caller gave up (cancelled): cancelling the RPC cancels the request
            responses.cancel()
    await close_stream(responses)
    return generation


async def close_stream(responses, timeout_s: float = STREAM_CLOSE_TIMEOUT_S) -> None:
    """End a gRPC stream whose request has had its final response: the requests side is
    closed already, so the server ends the RPC with OK. Cancelling it instead races the end
    of the request in tritonserver 2.51, whose stream state then leaks, holding the
    connection's socket (triton-inference-server/server PR #8078 fixes that race in 25.04)."""
    try:
        await asyncio.wait_for(_drain(responses), timeout_s)
    except Exception:   # asyncio.TimeoutError, or an error status: nothing more to read
        responses.cancel()


async def _drain(responses) -> None:
    async for _ in responses:
        pass


def http_generate_stream(url: str, fields: dict[str, Any], model: str = "ensemble",
                         timeout_s: float = 300.0) -> Generation:
    """One request over HTTP `generate_stream` (server-sent events, one JSON object per event)."""
    body = json.dumps(fields).encode()
    request = urllib.request.Request(f"{url}/v2/models/{model}/generate_stream", data=body,
                                     headers={"Content-Type": "application/json"})
    generation = Generation()
    started = time.perf_counter()
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as err:  # refused before streaming: the body names the problem
        generation.error = err.read().decode("utf-8", "replace")
        return generation
    with response:
        for raw_line in response:
            line = raw_line.decode("utf-8").strip()
            if not line.startswith("data:"):
                continue
            event = json.loads(line[len("data:"):])
            generation.arrival_s.append(time.perf_counter() - started)
            if "error" in event:
                generation.error = event["error"]
                break
            generation.deltas.append(event.get("text_output", ""))
            generation.finish_reason = event.get("finish_reason", "") or generation.finish_reason
            for name in STAT_OUTPUTS:
                if name in event:
                    generation.stats[name] = event[name]
    return generation
