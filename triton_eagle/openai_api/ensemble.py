"""One request through the Triton `ensemble` over a gRPC stream (tritonclient.grpc.aio), read
as Steps; closing the iterator early cancels the stream, which aborts the engine request
(postprocessing sees the cancellation and sends the engine model the `stop` form)."""
from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field
from typing import AsyncIterator

from triton_eagle.client import STAT_OUTPUTS, close_stream

MODEL = "ensemble"


class EnsembleError(Exception):
    """An error response from the ensemble, or Triton unreachable (`unavailable`)."""

    def __init__(self, message: str, unavailable: bool = False):
        super().__init__(message)
        self.unavailable = unavailable


@dataclass
class Step:
    """One ensemble response: this step's text deltas, the cumulative stats, the end."""

    text: str = ""
    reasoning: str = ""
    finish_reason: str = ""
    stats: dict[str, float] = field(default_factory=dict)


# Scalar output types our ensemble sends, as struct formats (KServe raw tensors are little-endian).
_SCALAR_FORMATS = {"INT32": "<i", "INT64": "<q", "UINT32": "<I", "UINT64": "<Q", "FP32": "<f", "FP64": "<d",
                   "BOOL": "<?"}
_TEXT_FIELDS = {"text_output": "text", "reasoning_output": "reasoning", "finish_reason": "finish_reason"}
_STATS = frozenset(STAT_OUTPUTS)


def _bytes_text(raw: bytes) -> str:
    """A raw BYTES tensor (each element: 4-byte little-endian length, then the bytes) as one string."""
    parts, offset = [], 0
    while offset < len(raw):
        (length,) = struct.unpack_from("<I", raw, offset)
        parts.append(raw[offset + 4:offset + 4 + length])
        offset += 4 + length
    return b"".join(parts).decode("utf-8", "replace")


def read_step(result) -> Step:
    """One pass over the response's raw outputs (Triton's gRPC frontend sends every output as
    raw_output_contents): tritonclient's as_numpy scans every output and builds a numpy array
    per call, nine calls per response."""
    response = result.get_response()
    raw_contents = response.raw_output_contents
    step = Step()
    for output, raw in zip(response.outputs, raw_contents):
        name = output.name
        if name in _TEXT_FIELDS:
            setattr(step, _TEXT_FIELDS[name], _bytes_text(raw))
        elif name in _STATS and raw:
            scalar = _SCALAR_FORMATS.get(output.datatype)
            step.stats[name] = (struct.unpack_from(scalar, raw)[0] if scalar
                                else result.as_numpy(name).reshape(-1)[0].item())
    return step


def _is_unavailable(error: Exception) -> bool:
    status = getattr(error, "status", lambda: None)()
    return "UNAVAILABLE" in f"{status} {error}" or "failed to connect" in str(error).lower()


class Ensemble:
    """A gRPC channel to Triton (one per server process; each request is its own stream)."""

    def __init__(self, url: str, model: str = MODEL):
        import tritonclient.grpc.aio as grpcclient

        self.url, self.model = url, model
        self.client = grpcclient.InferenceServerClient(url)

    async def ready(self) -> bool:
        try:
            return await self.client.is_server_ready() and await self.client.is_model_ready(self.model)
        except Exception:   # unreachable or not serving: not ready, whatever the reason
            return False

    async def close(self) -> None:
        await self.client.close()

    async def steps(self, inputs: list, request_id: str = "") -> AsyncIterator[Step]:
        """The responses of one request, up to the one with a finish_reason."""
        done = asyncio.Event()

        async def requests():
            yield {"model_name": self.model, "inputs": inputs, "request_id": request_id}
            await done.wait()

        call = self.client.stream_infer(requests())
        ended = False
        try:
            async for result, error in call:
                if error is not None:
                    raise EnsembleError(str(error), _is_unavailable(error))
                step = read_step(result)
                yield step
                if step.finish_reason:
                    ended = True
                    return
            raise EnsembleError("the ensemble stream ended without a final response")
        except EnsembleError:
            raise
        except asyncio.CancelledError:
            raise
        except Exception as err:   # the channel failed: Triton down or unreachable
            raise EnsembleError(f"Triton at {self.url}: {err}", _is_unavailable(err)) from None
        finally:
            done.set()
            if ended:   # the server ends the RPC: no cancel racing the request's end
                await close_stream(call)
            else:   # synchronous on purpose: this runs when the HTTP client went away mid-await
                call.cancel()
