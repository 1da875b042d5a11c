"""Read one streamed request into a RequestSample, timing each response as it arrives.

Runs inside Locust's gevent world: the gRPC functions need grpc's gevent integration
(the locustfile calls `grpc.experimental.gevent.init_gevent()` before any channel).
Both functions return normally on every failure (recorded in the sample) and clean up
on the way out of a gevent.Timeout or GreenletExit, so the server stops that request.
"""
from __future__ import annotations

import json
import queue
import time
from http.client import HTTPException

from loadtest.samples import ERROR_MID_STREAM, SERVER_DOWN, SERVER_ERROR, RequestSample
from triton_eagle.client import STAT_OUTPUTS, grpc_inputs

MODEL = "ensemble"
# refused, reset or closed connections (geventhttpclient's parse errors are HTTPExceptions)
CONNECTION_ERRORS = (OSError, HTTPException)


def _apply_stats(sample: RequestSample, stats: dict) -> None:
    """Stats are cumulative on every response; the last one read holds the request's totals."""
    if "num_input_tokens" in stats:
        sample.input_tokens = int(stats["num_input_tokens"])
    if "num_output_tokens" in stats:
        sample.output_tokens = int(stats["num_output_tokens"])
    if "total_draft_tokens" in stats:
        sample.total_draft_tokens = int(stats["total_draft_tokens"])
    if "total_accepted_draft_tokens" in stats:
        sample.total_accepted_draft_tokens = int(stats["total_accepted_draft_tokens"])
    if "acceptance_length" in stats:
        sample.acceptance_length = float(stats["acceptance_length"])


def _record_response(sample: RequestSample, at_s: float, text: str, stats: dict) -> None:
    # tokens per response from the cumulative count (one response can carry several tokens)
    tokens_before = sample.output_tokens or 0
    _apply_stats(sample, stats)
    tokens = (sample.output_tokens or 0) - tokens_before
    if tokens or text:
        sample.add_chunk(at_s, tokens, len(text))


# -- gRPC (tritonclient.grpc, one client per user) ---------------------------------------

def _grpc_response(result) -> tuple[str, str, dict, bool]:
    """(text and reasoning delta, finish_reason, stats, final flag) of one InferResult."""
    # the reasoning (Harmony's analysis, Qwen3's <think>) is streamed text too: the first token's
    # time and the pace per user count it, or a reasoning model's TTFT would be its answer's
    text = ""
    for name in ("text_output", "reasoning_output"):
        array = result.as_numpy(name)
        text += b"".join(array.reshape(-1)).decode("utf-8", "replace") if array is not None else ""
    reason_array = result.as_numpy("finish_reason")
    reason = reason_array.reshape(-1)[0].decode() if reason_array is not None and reason_array.size else ""
    stats = {}
    for name in STAT_OUTPUTS:
        value = result.as_numpy(name)
        if value is not None and value.size:
            stats[name] = value.reshape(-1)[0].item()
    parameters = result.get_response().parameters
    final = "triton_final_response" in parameters and parameters["triton_final_response"].bool_param
    return text, reason, stats, final


def _grpc_failure_reason(error, sample: RequestSample) -> str:
    if sample.chunk_s:
        return ERROR_MID_STREAM
    status = str(error.status() or "") if hasattr(error, "status") else ""
    return SERVER_DOWN if "UNAVAILABLE" in status else SERVER_ERROR


def grpc_stream(client, fields: dict, sample: RequestSample, started: float) -> None:
    """One request over a new bidirectional stream of `client` (a tritonclient.grpc
    InferenceServerClient); `started` = time.perf_counter() when the request was sent."""
    responses: queue.Queue = queue.Queue()
    # the arrival time is taken in the callback, not when this greenlet gets round to it
    client.start_stream(callback=lambda result, error: responses.put((time.perf_counter(), result, error)))
    finished = False
    try:
        client.async_stream_infer(MODEL, grpc_inputs(fields), enable_empty_final_response=True)
        while True:
            arrived, result, error = responses.get()
            at_s = arrived - started
            if error is not None:
                sample.fail(_grpc_failure_reason(error, sample), str(error), at_s)
                return
            text, reason, stats, final = _grpc_response(result)
            _record_response(sample, at_s, text, stats)
            if reason:
                sample.finish_reason, sample.end_s = reason, at_s
                finished = True
                return
            if final:   # the final flag without a finish_reason: the stream was cut short
                sample.fail(ERROR_MID_STREAM if sample.chunk_s else SERVER_ERROR,
                            "final response without a finish_reason", at_s)
                finished = True
                return
    finally:
        # a request still running (error, timeout, end of the run) is cancelled on the server
        client.stop_stream(cancel_requests=not finished)


# -- HTTP generate_stream (server-sent events) ---------------------------------------------

def _drop_connection(response) -> None:
    """Close the socket of an unfinished response (returning it to the pool would hand the
    next request a connection that is still mid-stream); the server sees the client go."""
    sock, pool = getattr(response, "_sock", None), getattr(response, "_pool", None)
    if sock is not None and pool is not None:
        pool.release_socket(sock)   # closes it
    response._sock = response._pool = None


def _read_sse(http_client, request_uri: str, body: bytes, sample: RequestSample, started: float,
              on_event, missing_end: str) -> None:
    """POST `body` and read the server-sent events line by line, each timed when its line arrives
    (Locust's iter_lines reads 1 KiB blocks). `on_event(at_s, event)` records one JSON event and
    returns True once the answer is complete. Failures are recorded on `sample`; an unfinished
    response's connection is dropped, so the server sees the client go."""
    try:
        response = http_client.request("POST", request_uri, body=body,
                                       headers={"Content-Type": "application/json",
                                                "Accept": "text/event-stream"})
    except CONNECTION_ERRORS as err:
        sample.fail(SERVER_DOWN, f"{type(err).__name__}: {err}", time.perf_counter() - started)
        return
    finished = False
    try:
        if response.status_code != 200:
            # refused before streaming: the body names the problem
            error_body = response.read().decode("utf-8", "replace")
            sample.fail(SERVER_ERROR, f"HTTP {response.status_code}: {error_body[:500]}", time.perf_counter() - started)
            finished = True
            return
        while True:
            try:
                line = response.readline(b"\n")
            except CONNECTION_ERRORS as err:
                sample.fail(ERROR_MID_STREAM if sample.chunk_s else SERVER_DOWN,
                            f"{type(err).__name__}: {err}", time.perf_counter() - started)
                return
            at_s = time.perf_counter() - started
            if not line:   # the body ended
                finished = True
                if not sample.finish_reason:
                    sample.fail(ERROR_MID_STREAM if sample.chunk_s else SERVER_ERROR, missing_end, at_s)
                return
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[len(b"data:"):].strip()
            if data == b"[DONE]":
                continue   # the body's end follows
            try:
                event = json.loads(data)
            except ValueError:
                sample.fail(ERROR_MID_STREAM, f"not a JSON event: {line[:200]!r}", at_s)
                return
            if "error" in event:
                sample.fail(ERROR_MID_STREAM if sample.chunk_s else SERVER_ERROR, str(event["error"]), at_s)
                return
            if on_event(at_s, event):
                while response.readline(b"\n"):   # to the body's end: the connection can be reused
                    pass
                finished = True
                return
    finally:
        if not finished:
            _drop_connection(response)


def http_stream(http_client, request_uri: str, fields: dict, sample: RequestSample, started: float) -> None:
    """One request over HTTP `generate_stream`. `http_client`: geventhttpclient's HTTPClient
    (what FastHttpUser's session uses underneath)."""
    def on_event(at_s: float, event: dict) -> bool:
        _record_response(sample, at_s, (event.get("text_output", "") or "") + (event.get("reasoning_output", "") or ""),
                         {name: event[name] for name in STAT_OUTPUTS if name in event})
        if event.get("finish_reason"):
            sample.finish_reason, sample.end_s = event["finish_reason"], at_s
            return True
        return False

    _read_sse(http_client, request_uri, json.dumps(fields).encode(), sample, started, on_event,
              "the stream ended without a final response")


# -- the OpenAI-compatible API (chat completions, server-sent events) ---------------------

def _usage_stats(usage: dict | None) -> dict:
    """The server's cumulative usage (stream_options.continuous_usage_stats) in STAT_OUTPUTS names."""
    if not usage:
        return {}
    spec = usage.get("speculative_decoding") or {}
    return {"num_input_tokens": usage.get("prompt_tokens", 0), "num_output_tokens": usage.get("completion_tokens", 0),
            "total_draft_tokens": spec.get("draft_tokens", 0),
            "total_accepted_draft_tokens": spec.get("accepted_draft_tokens", 0),
            "acceptance_length": spec.get("acceptance_length", 0.0)}


def openai_stream(http_client, request_uri: str, body: dict, sample: RequestSample, started: float) -> None:
    """One streamed /v1/chat/completions request, read like http_stream: each chunk timed as its
    line arrives, its tokens from the cumulative usage the server sends on every chunk."""
    body = {**body, "stream": True, "stream_options": {"include_usage": True, "continuous_usage_stats": True}}

    def on_event(at_s: float, chunk: dict) -> bool:
        if not chunk.get("choices"):
            return False   # the usage-only chunk repeats the last totals
        choice = chunk["choices"][0]
        delta = choice.get("delta") or {}
        text = (delta.get("content") or "") + (delta.get("reasoning_content") or "")
        _record_response(sample, at_s, text, _usage_stats(chunk.get("usage")))
        if choice.get("finish_reason") and not sample.finish_reason:
            sample.finish_reason, sample.end_s = choice["finish_reason"], at_s
        return False   # read on to [DONE] and the body's end

    _read_sse(http_client, request_uri, json.dumps(body).encode(), sample, started, on_event,
              "the stream ended without a finish_reason")
