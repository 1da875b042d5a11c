"""Soak: thousands of mixed requests against a fresh tritonserver; memory, fds and shm before and after.

Starts the repository on free ports, runs `--warmup` requests, takes a snapshot of every
server process (tritonserver and each Python-backend stub: RSS, open file descriptors) and
of the python-backend /dev/shm regions they map, runs `--requests` more, and compares.
The mix: streaming (gRPC and HTTP), non-streaming, cancelled after the first token, malformed
(refused by validation) and over-long (a prompt beyond max_seq_len). Every request must end
with a final response or an error: one that ends otherwise, or not within `--request-timeout`,
is lost. Targets: RSS growth under --max-rss-growth per process, no fd or shm growth, none lost.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
from tritonclient.utils import InferenceServerException

from triton_eagle.client import http_generate_stream, request_fields, stream_generate
from triton_eagle.prompts import mtbench_questions
from triton_eagle.tritonserver import (REPO_ROOT, TritonServer, TritonServerError, _mapped_shm_regions,
                                      free_ports)

# kind -> share of the requests
MIX = {"stream_grpc": 0.25, "stream_http": 0.15, "non_stream": 0.25, "cancelled": 0.15,
       "malformed": 0.12, "over_long": 0.08}
EXPECTS_ERROR = ("malformed", "over_long")
SETTLE_S = 5.0   # after the last request: let cancelled requests leave and connections close
PROGRESS_EVERY = 500
PROMPT_WORDS = 16   # the start of each MT-Bench question: the soak looks for leaks, not speed


@dataclass
class ProcessSample:
    pid: int
    name: str
    rss_kib: int
    open_fds: int


@dataclass
class Snapshot:
    after_requests: int
    processes: list[ProcessSample]
    shm_regions: int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-repository", type=Path, default=REPO_ROOT / "model_repository")
    parser.add_argument("--requests", type=int, default=5000, help="requests after the warm-up")
    parser.add_argument("--warmup", type=int, default=300, help="requests before the first snapshot")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=8, help="upper bound of each request's max_tokens")
    parser.add_argument("--request-timeout", type=float, default=300.0, metavar="SECONDS")
    parser.add_argument("--max-rss-growth", type=float, default=0.05, help="target, a fraction (0.05 = 5%%)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")


def sample_processes(server: TritonServer) -> Snapshot:
    processes = []
    pids = server._pids()
    for pid in pids:
        try:
            rss_kib = _status_kib(pid, "VmRSS")
            open_fds = len(os.listdir(f"/proc/{pid}/fd"))
            name = _process_name(pid)
        except OSError:
            continue   # it ended meanwhile
        processes.append(ProcessSample(pid, name, rss_kib, open_fds))
    return Snapshot(0, processes, len(_mapped_shm_regions(pids)))


def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _process_name(pid: int) -> str:
    args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    for arg in args:   # a stub: .../<model>/1/model.py
        if arg.endswith(b"/model.py"):
            return "stub:" + Path(arg.decode()).parents[1].name
    return Path(args[0].decode()).name


class Mix:
    """The request of each kind, reproducible from a seed."""

    def __init__(self, seed: int, max_tokens: int, max_seq_len_words: int = 3000):
        self.random = random.Random(seed)
        self.prompts = [" ".join(question.text.split()[:PROMPT_WORDS]) for question in mtbench_questions()]
        self.max_tokens = max_tokens
        self.over_long_text = " ".join(["word"] * max_seq_len_words)
        self.kinds = list(MIX)
        self.weights = [MIX[kind] for kind in self.kinds]

    def next(self) -> tuple[str, dict]:
        kind = self.random.choices(self.kinds, self.weights)[0]
        prompt = self.random.choice(self.prompts)
        max_tokens = self.random.randint(1, self.max_tokens)
        if kind == "over_long":
            return kind, request_fields(self.over_long_text, max_tokens=max_tokens)
        if kind == "malformed":
            bad = self.random.choice([{"max_tokens": -1}, {"temperature": -1.0}, {"top_p": 1.5},
                                      {"messages": "not json", "max_tokens": max_tokens}])
            fields = request_fields(None if "messages" in bad else prompt, max_tokens=max_tokens)
            fields.update(bad)
            return kind, fields
        if kind == "cancelled":
            return kind, request_fields(prompt, max_tokens=256, min_tokens=256)
        return kind, request_fields(prompt, max_tokens=max_tokens, stream=kind != "non_stream")


async def run_one(grpc_client, http_url: str, kind: str, fields: dict, timeout_s: float) -> str:
    """How the request ended: final | error | cancelled | lost."""
    try:
        if kind == "stream_http":
            generation = await asyncio.wait_for(asyncio.to_thread(
                http_generate_stream, f"http://{http_url}", fields, timeout_s=timeout_s), timeout_s)
        elif kind == "cancelled":
            return await _cancel_after_first_token(grpc_client, fields, timeout_s)
        else:
            generation = await asyncio.wait_for(stream_generate(grpc_client, fields), timeout_s)
    except asyncio.TimeoutError:
        return "lost"
    except (OSError, grpc.RpcError, InferenceServerException):   # the server went away mid-request
        return "lost"
    if generation.error is not None:
        return "error"
    return "final" if generation.finish_reason else "lost"


async def _cancel_after_first_token(grpc_client, fields: dict, timeout_s: float) -> str:
    first = asyncio.Event()
    task = asyncio.ensure_future(stream_generate(grpc_client, fields, on_delta=lambda _delta: first.set()))
    waiter = asyncio.ensure_future(first.wait())
    done, _ = await asyncio.wait({task, waiter}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if task in done:   # ended before any token: by an error, or too short to cancel
        generation = task.result()
        return "error" if generation.error is not None else ("final" if generation.finish_reason else "lost")
    task.cancel()   # closes the gRPC stream: tritonserver cancels the request
    if not done:
        return "lost"
    try:
        await task
    except asyncio.CancelledError:
        pass
    except grpc.RpcError:   # the server went away before the cancel
        return "lost"
    return "cancelled"


async def run_requests(server: TritonServer, mix: Mix, count: int, concurrency: int, timeout_s: float,
                       outcomes: Counter) -> None:
    import tritonclient.grpc.aio as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_url)
    remaining = count

    async def worker():
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            kind, fields = mix.next()
            outcome = await run_one(client, server.http_url, kind, fields, timeout_s)
            if kind not in EXPECTS_ERROR and outcome == "error":
                outcome = "unexpected_error"
            if kind in EXPECTS_ERROR and outcome != "error":
                outcome = "not_refused"
            outcomes[f"{kind}:{outcome}"] += 1

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await client.close()


def compare(start: Snapshot, end: Snapshot, max_rss_growth: float) -> tuple[list[dict], list[str]]:
    rows, failures = [], []
    ended = {p.pid: p for p in end.processes}
    for before in start.processes:
        after = ended.get(before.pid)
        if after is None:
            failures.append(f"{before.name} (pid {before.pid}) is gone")
            continue
        growth = (after.rss_kib - before.rss_kib) / before.rss_kib if before.rss_kib else 0.0
        rows.append({"process": before.name, "pid": before.pid, "rss_start_mib": before.rss_kib / 1024,
                     "rss_end_mib": after.rss_kib / 1024, "rss_growth": growth,
                     "fds_start": before.open_fds, "fds_end": after.open_fds})
        if growth >= max_rss_growth:
            failures.append(f"{before.name}: RSS grew {growth:.1%} (target < {max_rss_growth:.0%})")
        if after.open_fds > before.open_fds:
            failures.append(f"{before.name}: open fds {before.open_fds} -> {after.open_fds}")
    if end.shm_regions > start.shm_regions:
        failures.append(f"/dev/shm regions {start.shm_regions} -> {end.shm_regions}")
    return rows, failures


def run(args: argparse.Namespace) -> int:
    http_port, grpc_port, metrics_port = free_ports(3)
    server = TritonServer(args.model_repository, http_port=http_port, grpc_port=grpc_port,
                          metrics_port=metrics_port, log_path=REPO_ROOT / "build" / "triton-logs" /
                          f"soak-{http_port}.log")
    print(f"starting tritonserver (log {server.log_path}) ...", flush=True)
    try:
        server.start(ready_timeout_s=300)
    except TritonServerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    mix = Mix(args.seed, args.max_tokens)
    outcomes: Counter = Counter()
    try:
        started = time.monotonic()
        asyncio.run(run_requests(server, mix, args.warmup, args.concurrency, args.request_timeout, Counter()))
        time.sleep(SETTLE_S)
        start = sample_processes(server)
        start.after_requests = args.warmup
        print(f"warm-up: {args.warmup} requests in {time.monotonic() - started:.0f} s; soaking "
              f"{args.requests} ...", flush=True)
        soak_started = time.monotonic()
        done = 0
        while done < args.requests and server.running():   # in chunks: a trend, not just two points
            chunk = min(PROGRESS_EVERY, args.requests - done)
            asyncio.run(run_requests(server, mix, chunk, args.concurrency, args.request_timeout, outcomes))
            done += chunk
            print_progress(done, time.monotonic() - soak_started, sample_processes(server), outcomes)
        soak_s = time.monotonic() - soak_started
        time.sleep(SETTLE_S)
        end = sample_processes(server)
        end.after_requests = args.warmup + done
        died = None if server.running() else _death(server, done)
    finally:
        server.stop()
    rows, failures = compare(start, end, args.max_rss_growth)
    if died:
        failures.insert(0, died)
    lost = sum(count for key, count in outcomes.items() if key.endswith((":lost", ":unexpected_error",
                                                                            ":not_refused")))
    if lost:
        failures.append(f"{lost} requests lost or answered wrongly")
    report = {"requests": args.requests, "warmup": args.warmup, "concurrency": args.concurrency,
              "soak_s": soak_s, "outcomes": dict(sorted(outcomes.items())), "processes": rows,
              "shm_regions_start": start.shm_regions, "shm_regions_end": end.shm_regions,
              "failures": failures, "start": asdict(start), "end": asdict(end)}
    print_report(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return 1 if failures else 0


def _death(server: TritonServer, requests_done: int) -> str:
    code = server.process.returncode
    how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
    crash = [line for line in server.log_tail().splitlines() if "Signal (" in line or "terminate called" in line]
    return (f"tritonserver died ({how}) within the chunk ending at request {requests_done}"
            + (f": {'; '.join(crash)}" if crash else "") + f"; log {server.log_path}")


def print_progress(done: int, elapsed_s: float, snapshot: Snapshot, outcomes: Counter) -> None:
    processes = ", ".join(f"{p.name} {p.rss_kib / 1024:.0f} MiB/{p.open_fds} fds" for p in snapshot.processes)
    lost = sum(count for key, count in outcomes.items() if not key.endswith((":final", ":error", ":cancelled")))
    print(f"  {done} requests, {elapsed_s:.0f} s: {processes}; shm {snapshot.shm_regions}; lost {lost}", flush=True)


def print_report(report: dict) -> None:
    print(f"\n{report['requests']} requests after {report['warmup']} warm-up, concurrency "
          f"{report['concurrency']}, {report['soak_s']:.0f} s")
    for key, count in report["outcomes"].items():
        print(f"  {key:32} {count}")
    print(f"\n{'process':28} {'pid':>7} {'RSS start MiB':>14} {'RSS end MiB':>12} {'growth':>8} {'fds':>9}")
    for row in report["processes"]:
        print(f"{row['process']:28} {row['pid']:>7} {row['rss_start_mib']:>14.1f} {row['rss_end_mib']:>12.1f} "
              f"{row['rss_growth']:>8.1%} {row['fds_start']:>4}->{row['fds_end']:<4}")
    print(f"/dev/shm python-backend regions mapped: {report['shm_regions_start']} -> {report['shm_regions_end']}")
    print("PASS" if not report["failures"] else "FAIL: " + "; ".join(report["failures"]))
