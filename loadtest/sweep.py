"""A concurrency sweep: the same run at 1, 2, 4, ... users against one or two server
configurations (e.g. drafting on and off), drawn as one Pareto plot of total output
tokens/s against per-user tokens/s.

Against a simulation profile (`--simulated-profile`, python_backend/simulated/) the two
configurations are the seed deployment's SIMULATED engine with drafting on and off, and the plot
also draws the curves the profile predicts (what a B200 would hand the serving layer); everything
is labelled "simulated from published figures"."""
from __future__ import annotations

import json
import re
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


def folder_name(label: str) -> str:
    return re.sub(r"[^\w.]+", "-", label).strip("-")


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


def simulated_targets(profile_name: str, folder: Path) -> list[Target]:
    """The seed deployment's simulated engine, drafting on and off (off: one token per step at
    the profile's decode step time)."""
    from python_backend.simulated.profile import SIMULATION_LABEL
    from python_backend.simulated.repository import write_simulated_repository

    return [Target(f"{SIMULATION_LABEL}: drafting {state}",
                   write_simulated_repository(profile_name, folder / f"{profile_name}-drafting-{state}",
                                              drafting=state == "on"))
            for state in ("on", "off")]


def expected_curves(profile_name: str, levels: list[int], max_tokens: int) -> dict[str, list[dict]]:
    """What the profile predicts at each level: per-user tokens/s while streaming, and in total."""
    from python_backend.simulated.profile import SIMULATION_LABEL, load_profile
    from python_backend.simulated.repository import simulated_engine_config

    profile = load_profile(profile_name)
    max_batch_size = simulated_engine_config(profile_name)["max_batch_size"]
    curves = {}
    for drafting in (True, False):
        curves[f"expected, {SIMULATION_LABEL}: drafting {'on' if drafting else 'off'}"] = [
            {"users": users,
             "user_tokens_per_s": profile.tokens_per_s_per_user(min(users, max_batch_size), max_tokens, drafting),
             "output_tokens_per_s": profile.demanded_tokens_per_s(users, max_batch_size, max_tokens, drafting)}
            for users in sorted(levels)]
    return curves


def run_sweep(levels: list[int], options: RunOptions, targets: list[Target],
              expected: dict[str, list[dict]] | None = None, title_note: str = "") -> dict:
    """Every level against every target; DIR/<label>/users-N/ holds each run's report.
    `expected`: predicted curves drawn beside the measured ones (a simulation profile's)."""
    out = options.out
    curves: dict[str, list[dict]] = {}
    for target in targets:
        curves[target.label] = []
        with serving(target, options) as aimed:
            for users in sorted(levels):
                run_out = out / folder_name(target.label) / f"users-{users}"
                run_locust(replace(aimed, users=users, spawn_rate=None, out=run_out))
                curves[target.label].append(point(users, read_report(run_out)))
    config = {"levels": sorted(levels), "duration_s": options.duration_s, "protocol": options.protocol,
              "workload": options.workload, "max_tokens": options.max_tokens,
              "targets": {t.label: str(t.repository) if t.repository else f"{options.host}" for t in targets},
              "note": title_note.strip()}
    title = f"{title_note}{options.workload} · {options.protocol} · {options.duration_s:g} s per level"
    sweep = {"config": config, "curves": curves, "expected": expected or {},
             "plot": str(plots.pareto({**curves, **(expected or {})}, out / PARETO_PNG, title))}
    (out / SWEEP_JSON).write_text(json.dumps(sweep, indent=2) + "\n")
    (out / SWEEP_MD).write_text(markdown(sweep))
    return sweep


def _cell(value, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(sweep: dict) -> str:
    note = sweep["config"].get("note")
    lines = [f"# Concurrency sweep: {sweep['config']['workload']} over {sweep['config']['protocol']}", "",
             *([f"**{note}**", ""] if note else []),
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
    if sweep.get("expected"):
        lines += ["", "Predicted by the profile (what the simulated engine hands the serving layer):", "",
                  "| curve | users | per-user tok/s | total tok/s |", "|---|---|---|---|"]
        for label, points in sweep["expected"].items():
            lines += [f"| {label} | {p['users']} | {p['user_tokens_per_s']:.0f} | {p['output_tokens_per_s']:.0f} |"
                      for p in points]
    lines += ["", f"Plot: {sweep['plot']}"]
    return "\n".join(lines) + "\n"

