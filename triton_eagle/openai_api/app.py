"""The FastAPI app: /v1/models, /v1/chat/completions, /v1/completions, /health, /metrics.

A request is refused (OpenAI error JSON) before anything is streamed: the first ensemble
response is awaited before the 200, so the ensemble's validation errors are real 400s. A
client that goes away aborts its engine request at once: a watcher on the ASGI receive channel
sees the disconnect (uvicorn's ASGI 2.4 leaves a streaming response to find it only at its next
write) and puts it in the queue the request's steps arrive on (StepFeed).
"""
from __future__ import annotations

import asyncio
import hmac
import json
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from python_backend.admission import BUSY_PREFIX, ENGINE_FAILED_PREFIX
from triton_eagle.client import STREAM_CLOSE_TIMEOUT_S
from triton_eagle.openai_api.ensemble import Ensemble, EnsembleError, Step
from triton_eagle.openai_api.errors import APIError
from triton_eagle.openai_api.responses import Completion, error_event
from triton_eagle.openai_api.schema import (ChatCompletionRequest, CompletionRequest, ensemble_inputs,
                                            openai_field, parse_request)


@dataclass(frozen=True)
class Settings:
    triton_url: str                    # gRPC host:port of a tritonserver serving our ensemble
    served_model_name: str = "ensemble"
    api_key: str | None = None         # Bearer token required on /v1/* when set
    metrics_url: str | None = None     # Triton's Prometheus endpoint, where /metrics points


BUSY_RETRY_AFTER_S = 1   # a full queue drains in seconds at any real token rate


class ClientGone(Exception):
    """The HTTP client disconnected before the answer began."""


def ensemble_error(err: EnsembleError) -> APIError:
    """Triton unreachable, full, draining or failed -> 503 (busy: with Retry-After, so a client or
    load balancer retries elsewhere or later); the ensemble's own refusal (it names the input) -> 400."""
    if err.unavailable:
        return APIError(503, f"Triton is not reachable: {err}", code="triton_unavailable")
    message = str(err)
    if BUSY_PREFIX in message:
        return APIError(503, message, code="server_busy", retry_after_s=BUSY_RETRY_AFTER_S)
    if ENGINE_FAILED_PREFIX in message:
        return APIError(503, message, code="engine_failed")
    if "internal error" in message:
        return APIError(500, message, code="internal_error")
    message, param = openai_field(message)
    return APIError(400, message, param=param)


class StepFeed:
    """One request's ensemble steps and its client's disconnect, merged into one queue.

    Two tasks per request (one reads the gRPC stream, one watches the ASGI receive channel) put
    into the queue, so each step costs the streaming loop one `get`, not a race of new tasks.
    `close` cancels both: a stream closed early cancels its gRPC call, aborting the engine request.
    """

    _GONE = object()

    def __init__(self, request: Request, steps: AsyncIterator[Step]):
        self._queue: asyncio.Queue = asyncio.Queue()
        self._steps = steps
        self._finished = False   # the final step was read: the stream ends itself, no cancel
        self._tasks = [asyncio.ensure_future(self._read()), asyncio.ensure_future(self._watch(request))]

    async def _read(self) -> None:
        try:
            async for step in self._steps:
                self._queue.put_nowait(step)
                self._finished = bool(step.finish_reason)
        except EnsembleError as err:
            self._queue.put_nowait(err)

    async def _watch(self, request: Request) -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        self._queue.put_nowait(self._GONE)

    async def next(self) -> Step:
        """The next step; EnsembleError from the ensemble, ClientGone once the client left."""
        item = await self._queue.get()
        if item is self._GONE:
            raise ClientGone
        if isinstance(item, EnsembleError):
            raise item
        return item

    async def close(self) -> None:
        reader, watcher = self._tasks
        watcher.cancel()
        if self._finished:   # the reader is closing the gRPC stream with the server's OK
            await asyncio.wait({reader}, timeout=STREAM_CLOSE_TIMEOUT_S)
        reader.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._steps.aclose()


class BearerKey:
    """Plain ASGI middleware: /v1/* needs 'Authorization: Bearer <key>'. Not starlette's
    BaseHTTPMiddleware, which relays every streamed chunk through extra tasks and memory streams
    (a third of this server's CPU per chunk, measured)."""

    def __init__(self, app, key: str):
        self.app, self.key = app, key

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            scheme, _, token = dict(scope["headers"]).get(b"authorization", b"").partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.key.encode()):
                response = APIError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                                    code="invalid_api_key").response()
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.ensemble = Ensemble(settings.triton_url)
        try:
            yield
        finally:
            await app.state.ensemble.close()

    app = FastAPI(title="triton-eagle OpenAI-compatible API", lifespan=lifespan, docs_url=None, redoc_url=None)
    started = int(time.time())

    @app.exception_handler(APIError)
    async def _api_error(_request, err: APIError):
        return err.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request, err: StarletteHTTPException):
        return APIError(err.status_code, str(err.detail)).response()

    if settings.api_key:
        app.add_middleware(BearerKey, key=settings.api_key)

    def model_card() -> dict:
        return {"id": settings.served_model_name, "object": "model", "created": started, "owned_by": "triton-eagle"}

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str):
        check_model(model_id)
        return model_card()

    def check_model(name: str) -> None:
        if name != settings.served_model_name:
            raise APIError(404, f"model {name!r} does not exist; this server serves {settings.served_model_name!r}",
                           param="model", code="model_not_found")

    @app.get("/health")
    async def health():
        if await app.state.ensemble.ready():
            return Response(status_code=200)
        raise APIError(503, f"the ensemble at {settings.triton_url} is not ready", code="triton_not_ready")

    @app.get("/metrics")
    async def metrics():
        if settings.metrics_url is None:
            raise APIError(404, "no Triton metrics URL given (--metrics-url); Triton serves them on its metrics port")
        return RedirectResponse(settings.metrics_url, status_code=307)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await complete(request, ChatCompletionRequest, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await complete(request, CompletionRequest, chat=False)

    async def complete(request: Request, schema, chat: bool):
        try:
            body = json.loads(await request.body())
        except ValueError as err:
            raise APIError(400, f"the request body is not valid JSON: {err}") from None
        parsed = parse_request(schema, body)
        check_model(parsed.model)
        feed = StepFeed(request, app.state.ensemble.steps(ensemble_inputs(parsed.ensemble_fields())))
        completion = Completion(settings.served_model_name, chat)
        try:
            if not parsed.stream:
                try:
                    return JSONResponse(await _collect(feed, completion))
                finally:
                    await feed.close()
            first = await feed.next()
        except EnsembleError as err:
            await feed.close()
            raise ensemble_error(err) from None
        except ClientGone:
            await feed.close()
            return Response(status_code=499)   # nobody reads it; the engine request is aborted
        return StreamingResponse(_stream(feed, first, completion, parsed), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    return app


async def _collect(feed: StepFeed, completion: Completion) -> dict:
    while True:
        step = await feed.next()
        completion.add(step)
        if step.finish_reason:
            return completion.body()


async def _stream(feed: StepFeed, first: Step, completion: Completion, parsed) -> AsyncIterator[bytes]:
    with_usage = True if parsed.continuous_usage else (False if parsed.include_usage else None)
    try:
        role = completion.role_chunk(with_usage)
        if role is not None:
            yield role
        step = first
        while True:
            completion.add(step)
            chunk = completion.delta_chunk(step, with_usage)
            if chunk is not None:
                yield chunk
            if step.finish_reason:
                break
            step = await feed.next()
        for chunk in completion.final_chunks(parsed.include_usage, parsed.continuous_usage):
            yield chunk
    except EnsembleError as err:   # after the 200: the error is an event, then the stream ends
        for chunk in error_event(ensemble_error(err).body()):
            yield chunk
    except ClientGone:
        pass
    finally:
        await feed.close()   # a client gone mid-stream lands here: the engine request is aborted
