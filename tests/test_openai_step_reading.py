"""The OpenAI server's one-pass reader of an ensemble response gives what tritonclient's own
as_numpy gives, on a response built the way Triton's gRPC frontend sends it (raw contents)."""
from __future__ import annotations

import struct

import numpy as np
import pytest
from tritonclient.grpc import service_pb2
from tritonclient.grpc._infer_result import InferResult

from triton_eagle.client import STAT_OUTPUTS
from triton_eagle.openai_api.ensemble import read_step


def response(outputs: list[tuple[str, str, list]]) -> InferResult:
    message = service_pb2.ModelInferResponse(model_name="ensemble")
    for name, datatype, values in outputs:
        message.outputs.add(name=name, datatype=datatype, shape=[1, len(values)])
        if datatype == "BYTES":
            raw = b"".join(struct.pack("<I", len(v)) + v for v in values)
        else:
            raw = np.array(values, dtype={"INT32": np.int32, "FP32": np.float32}[datatype]).tobytes()
        message.raw_output_contents.append(raw)
    return InferResult(message)


def as_numpy_step(result) -> tuple:
    """The reference: every field through tritonclient's as_numpy."""
    def text(name):
        array = result.as_numpy(name)
        return b"".join(array.reshape(-1)).decode("utf-8", "replace") if array is not None else ""

    stats = {n: result.as_numpy(n).reshape(-1)[0].item() for n in STAT_OUTPUTS if result.as_numpy(n) is not None}
    return text("text_output"), text("reasoning_output"), text("finish_reason"), stats


STATS = [("num_input_tokens", "INT32", [17]), ("num_output_tokens", "INT32", [5]),
         ("total_draft_tokens", "INT32", [9]), ("total_accepted_draft_tokens", "INT32", [3]),
         ("acceptance_length", "FP32", [1.77]), ("acceptance_rate", "FP32", [0.333])]


@pytest.mark.parametrize("outputs", [
    [("text_output", "BYTES", [b" Par", "is é".encode()]), ("reasoning_output", "BYTES", [b""]),
     ("finish_reason", "BYTES", [b""]), *STATS],
    [("text_output", "BYTES", [b""]), ("reasoning_output", "BYTES", [b"thinking"]),
     ("finish_reason", "BYTES", [b"length"]), *STATS],
    [("text_output", "BYTES", [b"no stats, \xff broken utf-8"]), ("finish_reason", "BYTES", [b"stop"])],
], ids=["text-and-stats", "reasoning-final", "no-stats"])
def test_one_pass_reader_matches_tritonclients_as_numpy(outputs):
    result = response(outputs)
    step = read_step(result)
    assert (step.text, step.reasoning, step.finish_reason, step.stats) == as_numpy_step(result)
