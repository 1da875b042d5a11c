"""triton_eagle/tritonserver.py against the real tritonserver of the nvidia-pytriton wheel."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

from triton_eagle.tritonserver import (DRAIN_SETTLE_S, SHUTDOWN_DONE_GRACE_S, STOP_GRACE_S, TritonServer,
                                      TritonServerError, free_ports, prepare_backend_dir, python_version)
from triton_server import Stream, scalar, start_server

pytestmark = pytest.mark.triton
KILL_ALLOWANCE_S = 3.0   # the kill, the stubs' exit and the log polling, on a loaded machine


def test_backend_dir_links_the_stub_of_this_python(tmp_path):
    backend = prepare_backend_dir(backend_dir=tmp_path / "backends")
    stub = backend / "python" / "triton_python_backend_stub"
    assert stub.is_symlink() and f"/{python_version()}/" in os.readlink(stub)
    assert (backend / "python" / "libtriton_python.so").resolve().is_file()


def test_session_server_is_ready_with_the_engine_model(triton_server):
    import tritonclient.grpc as grpcclient

    assert triton_server.is_ready()
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    try:
        assert client.is_model_ready("tensorrt_llm")
    finally:
        client.close()


def test_a_model_that_fails_to_load_is_reported_with_its_error(tmp_path):
    broken = tmp_path / "repository" / "broken_model"
    (broken / "1").mkdir(parents=True)
    (broken / "config.pbtxt").write_text('backend: "python"\nmax_batch_size: 0\n')
    (broken / "1" / "model.py").write_text("raise RuntimeError('this model cannot load')\n")
    http_port, grpc_port, metrics_port = free_ports(3)
    server = TritonServer(tmp_path / "repository", http_port=http_port, grpc_port=grpc_port,
                          metrics_port=metrics_port, log_path=tmp_path / "server.log")
    with pytest.raises(TritonServerError) as err:
        server.start(ready_timeout_s=60)
    assert "this model cannot load" in str(err.value)
    assert not server.running()


def test_stop_with_streams_open_ends_within_the_exit_timeout_and_leaves_no_shm(tmp_path):
    exit_timeout_s = 3
    server = start_server(models=["tensorrt_llm"], exit_timeout_s=exit_timeout_s, name="stop-test")
    streams = []
    try:
        prompt = np.array([[1, 9690, 198, 19556, 253, 1345, 2]], dtype=np.int32)
        for _ in range(2):
            stream = Stream(server)
            stream.send("tensorrt_llm", {"input_ids": prompt, "request_output_len": scalar(1500, np.int32),
                                         "streaming": scalar(True, bool)})
            assert not isinstance(stream.next(), Exception)   # generating
            streams.append(stream)
        regions = set(server.owned_shm_regions)
        started = time.monotonic()
        server.stop()
        stop_s = time.monotonic() - started
    finally:
        server.stop()
        for stream in streams:
            stream.close()
    # drain timeout 0: the model ends the streams at once, then the exit timeout bounds the rest;
    # the clients' streams stay open, which would hold tritonserver's exit forever, so the stop
    # kills it soon after its log says its own stop is over, well before STOP_GRACE_S
    assert stop_s <= DRAIN_SETTLE_S + exit_timeout_s + SHUTDOWN_DONE_GRACE_S + KILL_ALLOWANCE_S < (
        exit_timeout_s + STOP_GRACE_S), f"stop took {stop_s:.1f} s"
    assert regions, "the server mapped no python-backend shm region: nothing was checked"
    assert not [path for path in regions if os.path.exists(path)]
