"""`triton-eagle soak`, shortened: every kind of request ends, and the figures are reported."""
from __future__ import annotations

import asyncio
import json
import os

import pytest

from triton_server import wait_for
from triton_eagle.cli import main
from triton_eagle.client import request_fields, stream_generate
from triton_eagle.soak import MIX

pytestmark = pytest.mark.triton
CLIENTS = 100   # a fresh connection each: the leak took about one in 25


def test_a_short_soak_loses_no_request_and_reports_every_server_process(tmp_path):
    report_path = tmp_path / "soak.json"
    # growth targets are for thousands of requests: a short run only checks the bookkeeping
    main(["soak", "--requests", "60", "--warmup", "12", "--concurrency", "6", "--max-rss-growth", "10",
          "--json", str(report_path)])
    report = json.loads(report_path.read_text())
    outcomes = report["outcomes"]
    assert sum(outcomes.values()) == 60
    assert not [key for key in outcomes if key.endswith((":lost", ":unexpected_error", ":not_refused"))], outcomes
    assert {key.split(":")[0] for key in outcomes} == set(MIX)
    names = {row["process"] for row in report["processes"]}
    assert {"tritonserver", "stub:tensorrt_llm", "stub:preprocessing", "stub:postprocessing"} <= names
    assert all(row["rss_start_mib"] > 0 and row["fds_start"] > 0 for row in report["processes"])
    assert report["shm_regions_start"] >= 3 and report["shm_regions_end"] == report["shm_regions_start"]


def _server_sockets(server) -> int:
    fd_dir = f"/proc/{server.process.pid}/fd"
    return sum(os.readlink(f"{fd_dir}/{fd}").startswith("socket:") for fd in os.listdir(fd_dir)
               if os.path.exists(f"{fd_dir}/{fd}"))


def test_clients_that_come_and_go_leave_no_socket_in_tritonserver(triton_server):
    """A client's gRPC stream ends with the server's OK, not a cancel: in tritonserver 2.51 a
    cancel racing the request's end leaked the stream state and its connection (about one
    request in 25 did, so a long-lived server ran out of descriptors)."""
    import tritonclient.grpc.aio as grpcclient

    async def one_client():
        client = grpcclient.InferenceServerClient(triton_server.grpc_url)
        try:
            generation = await stream_generate(client, request_fields("Hello", max_tokens=1))
        finally:
            await client.close()
        assert generation.finish_reason, generation.error

    before = _server_sockets(triton_server)
    for _ in range(CLIENTS):
        asyncio.run(one_client())
    assert wait_for(lambda: _server_sockets(triton_server) <= before, timeout_s=10), (
        f"tritonserver sockets {before} -> {_server_sockets(triton_server)} after {CLIENTS} clients")
