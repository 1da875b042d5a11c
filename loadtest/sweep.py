"""A concurrency sweep: the same run at 1, 2, 4, ... users against one or two server
configurations (e.g. drafting on and off), drawn as one Pareto plot of total output
tokens/s against per-user tokens/s."""
from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

from loadtest import plots
from loadtest.runner import RunOptions, read_report, run_locust

SWEEP_JSON = "sweep.json"
SWEEP_MD = "sweep.md"
PARETO_PNG = "pareto.png"


@dataclass(frozen=True)
class Target:
    """One curve: a label and either a model repository to serve here or a running server."""

    label: str
    repository: Path | None = None


@contextmanager
def serving(target: Target, options: RunOptions) -> Iterator[RunOptions]:
    """Run options aimed at the target: a fresh tritonserver on free loopback ports for a
    repository (stopped afterwards), else the server the options already name."""
    if target.repository is None:
        yield options
        return
    from triton_eagle.client import http_generate_stream, request_fields
    from triton_eagle.tritonserver import DEFAULT_LOG_DIR, TritonServer, free_ports

    http_port, grpc_port, metrics_port = free_ports(3)
    log_path = DEFAULT_LOG_DIR / f"loadtest-{target.label.replace(' ', '-')}-{http_port}.log"
    with TritonServer(target.repository, http_port=http_port, grpc_port=grpc_port,
                      metrics_port=metrics_port, log_path=log_path) as server:
        # first request pays one-off costs (imports, caches) that belong to no level
        http_generate_stream(f"http://{server.http_url}", request_fields("Hello", max_tokens=4))
        yield replace(options, host=server.host, http_port=http_port, grpc_port=grpc_port)


def point(users: int, report: dict) -> dict:
    """One sweep level: the figures the plot and the table use."""
    return {
        "users": users,
        "output_tokens_per_s": report["output_tokens_per_s"]["overall"],
        "request_throughput": report["request_throughput"]["overall"],
        "user_tokens_per_s": report["user_tokens_per_s"]["p50"],
        "ttft_s": report["ttft_s"]["p50"],
        "itl_s": report["itl_s"]["p50"],
        "acceptance_length": report["acceptance_length"]["overall"],
        "completed": report["requests"]["completed"],
        "failures": report["failures"]["count"],
    }


def run_sweep(levels: list[int], options: RunOptions, targets: list[Target]) -> dict:
    """Every level against every target; DIR/<label>/users-N/ holds each run's report."""
    out = options.out
    curves: dict[str, list[dict]] = {}
    for target in targets:
        curves[target.label] = []
        with serving(target, options) as aimed:
            for users in sorted(levels):
                run_out = out / target.label.replace(" ", "-") / f"users-{users}"
                run_locust(replace(aimed, users=users, spawn_rate=None, out=run_out))
                curves[target.label].append(point(users, read_report(run_out)))
    config = {"levels": sorted(levels), "duration_s": options.duration_s, "protocol": options.protocol,
              "workload": options.workload, "max_tokens": options.max_tokens,
              "targets": {t.label: str(t.repository) if t.repository else f"{options.host}" for t in targets}}
    title = f"{options.workload} · {options.protocol} · {options.duration_s:g} s per level"
    sweep = {"config": config, "curves": curves,
             "plot": str(plots.pareto(curves, out / PARETO_PNG, title))}
    (out / SWEEP_JSON).write_text(json.dumps(sweep, indent=2) + "\n")
    (out / SWEEP_MD).write_text(markdown(sweep))
    return sweep


def _cell(value, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(sweep: dict) -> str:
    lines = [f"# Concurrency sweep: {sweep['config']['workload']} over {sweep['config']['protocol']}", "",
             "| config | users | output tok/s | req/s | per-user tok/s p50 | TTFT p50 (ms) | ITL p50 (ms) "
             "| acceptance length | completed | failed |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for label, points in sweep["curves"].items():
        for p in points:
            lines.append(
                f"| {label} | {p['users']} | {_cell(p['output_tokens_per_s'])} | {_cell(p['request_throughput'], 3)} "
                f"| {_cell(p['user_tokens_per_s'])} | {_cell(p['ttft_s'] and p['ttft_s'] * 1000, 0)} "
                f"| {_cell(p['itl_s'] and p['itl_s'] * 1000, 0)} | {_cell(p['acceptance_length'])} "
                f"| {p['completed']} | {p['failures']} |")
    lines += ["", f"Plot: {sweep['plot']}"]
    return "\n".join(lines) + "\n"

