"""`triton-eagle loadtest run` against a real tritonserver: Locust's processes, the
ensemble's streams, the report, and the run under bad conditions (server down, timeouts,
a server that dies mid-stream). Runs are a few seconds each: the CPU engine is slow."""
from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from loadtest.samples import ERROR_MID_STREAM, SERVER_DOWN, TIMEOUT, read_samples
from triton_eagle.cli import main
from triton_server import metric, start_server, wait_for

pytestmark = pytest.mark.triton


def loadtest(server_or_ports, out: Path, *args: str) -> tuple[int, dict]:
    http_port, grpc_port = ((server_or_ports.http_port, server_or_ports.grpc_port)
                            if hasattr(server_or_ports, "http_port") else server_or_ports)
    code = main(["loadtest", "run", "--out", str(out), "--http-port", str(http_port), "--grpc-port", str(grpc_port),
                 *args, "--", "--only-summary"])
    return code, json.loads((out / "report.json").read_text())


@pytest.mark.timeout(60, func_only=True)   # the session server may start first
def test_smoke_grpc_mtbench_run_reports_throughput_and_acceptance(triton_server, tmp_path):
    started = time.monotonic()
    code, report = loadtest(triton_server, tmp_path, "--users", "2", "--duration", "12", "--protocol", "grpc",
                            "--workload", "mt-bench", "--max-tokens", "8")
    assert code == 0, report["failures"]
    assert report["failures"]["count"] == 0
    assert report["requests"]["completed"] >= 2
    assert report["output_tokens_per_s"]["overall"] > 0
    assert report["request_throughput"]["overall"] > 0
    for key in ("ttft_s", "itl_s", "user_tokens_per_s"):
        assert 0 < report[key]["p50"] <= report[key]["p90"] <= report[key]["p99"], key
    acceptance = report["acceptance_length"]
    assert acceptance["overall"] >= 1.0 and acceptance["drafting_steps"] > 0
    assert set(acceptance["by_category"]) <= {"writing", "roleplay", "reasoning", "math", "coding", "extraction",
                                              "stem", "humanities"} and acceptance["by_category"]
    # every request is kept raw, and the figures come from those samples
    samples = read_samples(tmp_path / "samples.jsonl")
    assert len(samples) == report["requests"]["sent"]
    assert sum(s.received_tokens for s in samples) == report["output_tokens"]
    assert all(s.output_tokens == 8 for s in samples if s.finish_reason == "length")
    for name in ("report.md", "latency_distributions.png", "acceptance_by_category.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert time.monotonic() - started < 60


def test_openai_protocol_run_counts_what_the_server_produced(triton_server, tmp_path):
    from triton_eagle.openai_api.process import OpenAIServer
    from triton_eagle.tritonserver import free_port

    with OpenAIServer(triton_server.grpc_url, free_port()) as api:
        produced_before = metric(triton_server, "triton_eagle_output_tokens_total")
        code, report = loadtest(triton_server, tmp_path, "--users", "2", "--duration", "8", "--protocol", "openai",
                                "--openai-port", str(api.port), "--workload", "mt-bench", "--max-tokens", "8")
        produced = metric(triton_server, "triton_eagle_output_tokens_total") - produced_before
    assert code == 0, report["failures"]
    assert report["requests"]["completed"] >= 2 and report["failures"]["count"] == 0
    assert report["ttft_s"]["p50"] > 0 and report["acceptance_length"]["drafting_steps"] > 0
    # the client's token count (the server's usage on every chunk) is what the engine produced,
    # but for requests cut at the end of the run, which the counter may include
    samples = read_samples(tmp_path / "samples.jsonl")
    assert sum(s.received_tokens for s in samples) == report["output_tokens"] > 0
    assert report["output_tokens"] <= produced <= report["output_tokens"] + 8 * report["requests"]["cut_at_end"]


def test_http_synthetic_run_forces_lengths_and_keeps_locust_csv(triton_server, tmp_path):
    code, report = loadtest(triton_server, tmp_path, "--users", "2", "--duration", "8", "--protocol", "http",
                            "--workload", "synthetic", "--input-tokens", "16", "--output-tokens", "6",
                            "--csv", str(tmp_path / "locust"))
    assert code == 0 and report["requests"]["completed"] >= 1
    assert report["protocols"] == ["http"]
    assert report["output_tokens_per_request"]["min"] == report["output_tokens_per_request"]["max"] == 6
    assert set(report["acceptance_length"]["by_category"]) == {"synthetic"}
    # Locust's own statistics carry the stream's E2E and TTFT rows
    stats = (tmp_path / "locust_stats.csv").read_text()
    assert "HTTP,generate_stream" in stats and "HTTP,TTFT" in stats


def test_distributed_master_and_two_workers_merge_every_sample(triton_server, tmp_path):
    code, report = loadtest(triton_server, tmp_path, "--users", "4", "--duration", "8", "--protocol", "grpc",
                            "--max-tokens", "8", "--workers", "2")
    assert code == 0 and report["config"]["workers"] == 2
    worker_files = sorted((tmp_path / "workers").glob("*.jsonl"))
    assert len(worker_files) == 2
    from_workers = [s for path in worker_files for s in read_samples(path)]
    merged = read_samples(tmp_path / "samples.jsonl")
    assert len({s.process for s in merged}) == 2
    # streams cut when the run stopped reach the master too
    assert sorted((s.process, s.start_time, s.outcome) for s in merged) == \
        sorted((s.process, s.start_time, s.outcome) for s in from_workers)
    assert report["requests"]["sent"] == len(merged) and report["output_tokens_per_s"]["overall"] > 0


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_server_down_is_counted_as_failures_and_the_run_ends_cleanly(tmp_path, protocol):
    # bound but not listening: connections are refused, and no server starting beside us takes the ports
    held = [socket.socket() for _ in range(2)]
    for sock in held:
        sock.bind(("127.0.0.1", 0))
    started = time.monotonic()
    try:
        code, report = loadtest([sock.getsockname()[1] for sock in held], tmp_path,
                                "--users", "2", "--duration", "3", "--protocol", protocol)
    finally:
        for sock in held:
            sock.close()
    assert code == 1                                     # Locust's exit code for failed requests
    assert time.monotonic() - started < 30
    assert report["requests"]["completed"] == 0
    # every request failed, but for any still connecting when the run stopped (cut, not failed)
    assert report["failures"]["count"] == report["requests"]["sent"] - report["requests"]["cut_at_end"] > 0
    assert list(report["failures"]["by_reason"]) == [SERVER_DOWN]
    assert "refused" in report["failures"]["examples"][SERVER_DOWN].lower()
    assert report["output_tokens_per_s"]["overall"] == 0
    assert "| server down |" in (tmp_path / "report.md").read_text()


def test_timeouts_are_failures_and_the_server_stops_those_requests(triton_server, tmp_path):
    code, report = loadtest(triton_server, tmp_path, "--users", "2", "--duration", "4", "--protocol", "http",
                            "--max-tokens", "200", "--request-timeout", "1")
    assert code == 1
    assert report["failures"]["by_reason"].get(TIMEOUT, 0) >= 2
    assert report["failures"]["examples"][TIMEOUT] == "no final response within 1 s"
    # the client dropped each timed-out stream: the engine is not left generating 200 tokens
    assert wait_for(lambda: metric(triton_server, "triton_eagle_active_requests") == 0, timeout_s=10)


def test_server_dying_mid_run_counts_errors_mid_stream_then_server_down(tmp_path):
    server = start_server(name="loadtest-dies")
    killer = threading.Timer(4.0, lambda: os.killpg(server.process.pid, signal.SIGKILL))
    try:
        killer.start()
        # answers long enough (256 tokens: several seconds each) that streams are open when it dies
        code, report = loadtest(server, tmp_path, "--users", "2", "--duration", "8", "--protocol", "grpc",
                                "--max-tokens", "256")
    finally:
        killer.cancel()
        server.stop()
    assert code == 1
    reasons = report["failures"]["by_reason"]
    assert reasons.get(ERROR_MID_STREAM, 0) >= 1, reasons     # streams open when it died
    assert reasons.get(SERVER_DOWN, 0) >= 1, reasons          # requests sent after
    assert report["output_tokens"] > 0                        # what it served before still counts
