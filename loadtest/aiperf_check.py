"""Cross-check Locust against NVIDIA's aiperf: the same prompts file, concurrency and request
count, through the same OpenAI-compatible server, each tool pinned to the same CPU, and each
tool's output-token count checked against the server's own `triton_eagle_output_tokens_total`.

    make aiperf     (aiperf==0.13.0 in .venv-aiperf, then this module)
    .venv/bin/python -m loadtest.aiperf_check --aiperf .venv-aiperf/bin/aiperf --out build/aiperf-check

Definitions compared (aiperf 0.13.0, aiperf/metrics/types/*.py; ours: loadtest/metrics.py):
output tokens/s = output tokens / (first request sent -> last response), TTFT = first
non-empty content, ITL = (latency - TTFT) / (output tokens - 1), per-user tokens/s = 1 / ITL.
aiperf counts output tokens by re-tokenizing the streamed text with --tokenizer; Locust takes
the server's usage counts (num_output_tokens).
"""
from __future__ import annotations

import argparse
import json
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from triton_eagle.openai_api.process import OpenAIServer
from triton_eagle.tritonserver import LOCAL_OPENER, REPO_ROOT, TritonServer, free_ports

COUNTER = "triton_eagle_output_tokens_total"


def server_counter(metrics_url: str, name: str = COUNTER) -> float:
    """Sum of one counter over its series, from Triton's metrics port."""
    with LOCAL_OPENER.open(metrics_url, timeout=10) as response:
        text = response.read().decode()
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", text, re.MULTILINE))


def write_prompts(path: Path, count: int) -> Path:
    """`count` MT-Bench first turns, categories interleaved, as {"text": ...} lines both tools read."""
    from loadtest.workloads import mtbench

    prompts = mtbench().prompts[:count]
    path.write_text("".join(json.dumps({"text": p.text}) + "\n" for p in prompts), encoding="utf-8")
    return path


def pinned(cpu: int, command: list[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *command]


def run_aiperf(aiperf: str, api: OpenAIServer, prompts: Path, tokenizer: Path, args, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    command = pinned(args.cpu, [
        aiperf, "profile", "--model", api.served_model_name, "--tokenizer", str(tokenizer), "--url", api.url,
        "--endpoint-type", "chat", "--streaming", "--concurrency", str(args.users),
        "--request-count", str(args.requests), "--input-file", str(prompts), "--custom-dataset-type", "single_turn",
        "--dataset-sampling-strategy", "sequential", "--extra-inputs", f"max_tokens:{args.max_tokens}",
        "--artifact-dir", str(out), "--ui-type", "none", "--no-server-metrics", "--no-gpu-telemetry"])
    subprocess.run(command, check=True)
    export = json.loads(next(out.rglob("profile_export_aiperf.json")).read_text())

    def stat(tag: str, field: str) -> float | None:
        value = export.get(tag) or export.get("records", {}).get(tag) or {}
        return value.get(field) if isinstance(value, dict) else None

    return {"output_tokens_per_s": stat("output_token_throughput", "avg"),
            "output_tokens": stat("total_output_tokens", "avg") or stat("total_osl", "avg"),
            "requests": stat("request_count", "avg"),
            "ttft_p50_s": _ms_to_s(stat("time_to_first_token", "p50")),
            "itl_p50_s": _ms_to_s(stat("inter_token_latency", "p50")),
            "user_tokens_per_s_p50": stat("output_token_throughput_per_user", "p50"),
            "duration_s": stat("benchmark_duration", "avg")}


def _ms_to_s(value: float | None) -> float | None:
    return None if value is None else value / 1000.0


def run_locust(api: OpenAIServer, prompts: Path, args, out: Path) -> dict:
    command = pinned(args.cpu, [
        sys.executable, "-m", "triton_eagle.cli", "loadtest", "run", "--protocol", "openai",
        "--users", str(args.users), "--requests", str(args.requests), "--duration", "3600",
        "--workload", str(prompts), "--max-tokens", str(args.max_tokens), "--host", api.host,
        "--openai-port", str(api.port), "--out", str(out), "--", "--only-summary"])
    subprocess.run(command, check=True)
    report = json.loads((out / "report.json").read_text())
    return {"output_tokens_per_s": report["output_tokens_per_s"]["overall"],
            "output_tokens": report["output_tokens"], "requests": report["requests"]["completed"],
            "ttft_p50_s": report["ttft_s"]["p50"], "itl_p50_s": report["itl_s"]["p50"],
            "user_tokens_per_s_p50": report["user_tokens_per_s"]["p50"], "duration_s": report["duration_s"]}


def measured(metrics_url: str, run) -> dict:
    """One tool's figures, plus the server's token counter and the tool's CPU time over its run."""
    before, cpu_before = server_counter(metrics_url), _children_cpu_s()
    started = time.monotonic()
    figures = run()
    wall_s = time.monotonic() - started
    figures["server_output_tokens"] = server_counter(metrics_url) - before
    figures["tool_over_server_tokens"] = round(figures["output_tokens"] / figures["server_output_tokens"], 4)
    # the tool's own processes (waited for, so counted), over the whole command
    figures["tool_cpu_s"] = round(_children_cpu_s() - cpu_before, 1)
    figures["wall_s"] = round(wall_s, 1)
    return figures


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


ROWS = [("output tokens", "output_tokens", "{:.0f}"), ("server's output-token counter", "server_output_tokens", "{:.0f}"),
        ("tool / server tokens", "tool_over_server_tokens", "{:.4f}"),
        ("output tokens/s", "output_tokens_per_s", "{:.2f}"), ("TTFT p50 (ms)", "ttft_p50_s", "ms"),
        ("ITL p50 (ms)", "itl_p50_s", "ms"), ("per-user tokens/s p50", "user_tokens_per_s_p50", "{:.2f}"),
        ("duration (s)", "duration_s", "{:.1f}"), ("tool CPU time (s)", "tool_cpu_s", "{:.1f}"),
        ("requests", "requests", "{:.0f}")]


def markdown(runs: list[tuple[str, dict]], args) -> str:
    """One column per run, in the order they ran."""
    lines = [f"{args.requests} requests, {args.users} concurrent, max_tokens {args.max_tokens}, "
             f"each tool pinned to CPU {args.cpu}", "",
             "| | " + " | ".join(name for name, _ in runs) + " |", "|---|" + "---|" * len(runs)]
    for label, key, fmt in ROWS:
        cells = []
        for _, figures in runs:
            value = figures.get(key)
            cells.append("–" if value is None else f"{value * 1000:.0f}" if fmt == "ms" else fmt.format(value))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aiperf", default=str(REPO_ROOT / ".venv-aiperf" / "bin" / "aiperf"))
    parser.add_argument("--model-repository", type=Path, default=REPO_ROOT / "model_repository")
    parser.add_argument("--tokenizer", type=Path, default=REPO_ROOT / "models" / "SmolLM2-135M-Instruct",
                        help="aiperf's tokenizer: the checkpoint folder (a local path; no HF_HUB_OFFLINE)")
    parser.add_argument("--users", type=int, default=4, help="concurrency of both tools (default 4)")
    parser.add_argument("--requests", type=int, default=24, help="requests per tool (default 24)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--cpu", type=int, default=1, help="the CPU both tools are pinned to (default 1)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="tool pairs, alternating who goes first (aiperf, locust, locust, aiperf, ...)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "build" / "aiperf-check")
    args = parser.parse_args(argv)
    if not Path(args.aiperf).is_file():
        raise SystemExit(f"no aiperf at {args.aiperf}: run `make aiperf` (it installs aiperf==0.13.0 in .venv-aiperf)")
    args.out.mkdir(parents=True, exist_ok=True)
    prompts = write_prompts(args.out / "prompts.jsonl", args.requests)
    http, grpc, metrics, openai_port = free_ports(4)
    with TritonServer(args.model_repository, http_port=http, grpc_port=grpc, metrics_port=metrics) as server, \
            OpenAIServer(server.grpc_url, openai_port, metrics_url=server.metrics_url) as api:
        warm_up(api)
        tools = {"aiperf": lambda out: run_aiperf(args.aiperf, api, prompts, args.tokenizer, args, out),
                 "locust": lambda out: run_locust(api, prompts, args, out)}
        runs = []
        for round_number in range(1, args.rounds + 1):
            order = ["aiperf", "locust"] if round_number % 2 else ["locust", "aiperf"]
            for tool in order:
                name = f"{tool} #{round_number}"
                runs.append((name, measured(server.metrics_url,
                                            lambda: tools[tool](args.out / f"{tool}-{round_number}"))))
    results = dict(runs)
    (args.out / "crosscheck.json").write_text(json.dumps(results, indent=2))
    table = markdown(runs, args)
    (args.out / "crosscheck.md").write_text(table)
    print(table)
    return 0


def warm_up(api: OpenAIServer) -> None:
    import openai

    with openai.OpenAI(base_url=api.base_url, api_key="unused", max_retries=0) as client:
        started = time.monotonic()
        client.chat.completions.create(model=api.served_model_name, max_tokens=8,
                                       messages=[{"role": "user", "content": "Hello"}])
        print(f"warm-up request: {time.monotonic() - started:.1f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
