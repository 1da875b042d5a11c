"""A real tritonserver for the end-to-end tests: one per test session, on free ports.

The `triton_server` fixture (registered in conftest.py) serves model_repository/ as
deployed. Two environment variables help while debugging one model:
TRITON_EAGLE_TEST_REPOSITORY (another repository folder) and TRITON_EAGLE_TEST_MODELS
(comma-separated: load only these).
"""
from __future__ import annotations

import os
import queue
import re
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from triton_eagle.tritonserver import LOCAL_OPENER, REPO_ROOT, TritonServer, free_ports

DEFAULT_REPOSITORY = REPO_ROOT / "model_repository"
LOG_DIR = REPO_ROOT / "build" / "test-logs"


def start_server(repository: str | Path | None = None, models: list[str] | None = None,
                 exit_timeout_s: int = 5, name: str = "session", drain_timeout_s: float = 0.0) -> TritonServer:
    repository = repository or os.environ.get("TRITON_EAGLE_TEST_REPOSITORY") or DEFAULT_REPOSITORY
    if models is None and os.environ.get("TRITON_EAGLE_TEST_MODELS"):
        models = os.environ["TRITON_EAGLE_TEST_MODELS"].split(",")
    http_port, grpc_port, metrics_port = free_ports(3)
    server = TritonServer(repository, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
                          exit_timeout_s=exit_timeout_s, drain_timeout_s=drain_timeout_s, models=models,
                          log_path=LOG_DIR / f"tritonserver-{name}-{http_port}.log")
    return server.start(ready_timeout_s=300)


@pytest.fixture(scope="session")
def triton_server() -> Iterator[TritonServer]:
    server = start_server()
    try:
        yield server
    finally:
        server.stop()


# -- client helpers ------------------------------------------------------------------

def metric_values(server: TritonServer, name: str) -> dict[str, float]:
    """{labels text: value} of one metric family from the metrics port."""
    with LOCAL_OPENER.open(server.metrics_url, timeout=5) as resp:
        text = resp.read().decode()
    values = {}
    for match in re.finditer(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", text, re.MULTILINE):
        values[match.group(1) or ""] = float(match.group(2))
    return values


def metric(server: TritonServer, name: str, **labels: str) -> float:
    """Sum of a metric over the series whose labels include `labels`."""
    wanted = [f'{key}="{value}"' for key, value in labels.items()]
    return sum(value for series, value in metric_values(server, name).items()
               if all(item in series for item in wanted))


def wait_for(condition, timeout_s: float = 10.0, interval_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval_s)


class Stream:
    """One gRPC bidirectional stream (tritonclient), its responses in a queue."""

    def __init__(self, server: TritonServer):
        import tritonclient.grpc as grpcclient

        self._grpc = grpcclient
        self.client = grpcclient.InferenceServerClient(server.grpc_url)
        self.responses: queue.Queue = queue.Queue()
        self.client.start_stream(callback=lambda result, error: self.responses.put(error or result))

    def send(self, model: str, inputs: dict[str, np.ndarray], request_id: str = "") -> None:
        tensors = []
        for name, array in inputs.items():
            datatype = "BYTES" if array.dtype == object else self._grpc_type(array)
            tensor = self._grpc.InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        self.client.async_stream_infer(model, tensors, request_id=request_id, enable_empty_final_response=True)

    @staticmethod
    def _grpc_type(array: np.ndarray) -> str:
        from tritonclient.utils import np_to_triton_dtype

        return np_to_triton_dtype(array.dtype)

    def next(self, timeout_s: float = 60.0):
        """The next response (an InferResult) or the error (an InferenceServerException)."""
        return self.responses.get(timeout=timeout_s)

    def until_final(self, timeout_s: float = 120.0) -> list:
        """All responses up to and including the one flagged final (or an error)."""
        received = []
        deadline = time.monotonic() + timeout_s
        while True:
            item = self.next(max(deadline - time.monotonic(), 0.01))
            received.append(item)
            if isinstance(item, Exception) or is_final(item):
                return received

    def close(self, cancel: bool = False) -> None:
        self.client.stop_stream(cancel_requests=cancel)
        self.client.close()


def is_final(result) -> bool:
    return result.get_response().parameters["triton_final_response"].bool_param


def scalar(value, dtype) -> np.ndarray:
    return np.array([[value]], dtype=dtype)
