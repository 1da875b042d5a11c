"""Cross-check Locust against NVIDIA's aiperf: the same prompts, concurrency and request
count, through the same endpoint, each tool pinned to the same CPU, and each tool's
output-token count checked against the server's own `triton_eagle_output_tokens_total`.

Endpoints (`--endpoint`, default both): `openai`, streamed chat completions through the
OpenAI-compatible server (aiperf `--endpoint-type chat`, Locust `--protocol openai`), and
`generate_stream`, Triton's KServe HTTP endpoint directly (aiperf `--endpoint-type template`
with the payload template aiperf_generate_stream.j2 and `response_field:text_output`, Locust
`--protocol http`; both send the prompt raw as `text_input`).

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
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from triton_eagle.openai_api.process import OpenAIServer
from triton_eagle.tritonserver import LOCAL_OPENER, REPO_ROOT, TritonServer, free_ports

COUNTER = "triton_eagle_output_tokens_total"
LOOPBACK = "127.0.0.1"


def server_counter(metrics_url: str, name: str = COUNTER) -> float:
    """Sum of one counter over its series, from Triton's metrics port."""
    with LOCAL_OPENER.open(metrics_url, timeout=10) as response:
        text = response.read().decode()
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", text, re.MULTILINE))


def write_prompts(folder: Path, count: int) -> dict[str, Path]:
    """`count` MT-Bench first turns, categories interleaved, each sent as a one-message chat by
    both tools. aiperf reads {"text": ...} lines (its template wraps the text as `messages` for
    generate_stream); Locust's JSONL reads the same lines for the OpenAI API, and {"messages": ...}
    lines for generate_stream, where {"text": ...} would be a raw text_input with no chat template."""
    from loadtest.workloads import mtbench

    texts = [p.messages[-1]["content"] for p in mtbench().prompts[:count]]
    files = {"text": folder / "prompts.jsonl", "messages": folder / "prompts-messages.jsonl"}
    files["text"].write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    files["messages"].write_text("".join(json.dumps({"messages": [{"role": "user", "content": t}]}) + "\n"
                                         for t in texts), encoding="utf-8")
    return files


def pinned(cpu: int, command: list[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *command]


GENERATE_STREAM_TEMPLATE = Path(__file__).with_name("aiperf_generate_stream.j2")


@dataclass(frozen=True)
class Target:
    """Where both tools send their requests, and how each tool is told so."""

    endpoint: str                 # openai | generate_stream
    url: str                      # http://host:port
    port: int
    model: str = "ensemble"

    def aiperf_arguments(self, max_tokens: int) -> list[str]:
        if self.endpoint == "openai":
            return ["--endpoint-type", "chat", "--extra-inputs", f"max_tokens:{max_tokens}"]
        # the template renders {"messages": "[{\\"role\\": \\"user\\", ...}]", "stream": true} (the ensemble's
        # chat input, a JSON string); extra inputs are merged into it
        return ["--endpoint-type", "template", "--custom-endpoint", f"/v2/models/{self.model}/generate_stream",
                "--extra-inputs", f"payload_template:{GENERATE_STREAM_TEMPLATE}",
                "--extra-inputs", "response_field:text_output", "--extra-inputs", f"max_tokens:{max_tokens}"]

    def locust_arguments(self, prompts: dict[str, Path]) -> list[str]:
        if self.endpoint == "openai":
            return ["--protocol", "openai", "--openai-port", str(self.port), "--workload", str(prompts["text"])]
        return ["--protocol", "http", "--http-port", str(self.port), "--workload", str(prompts["messages"])]


ENDPOINTS = ("openai", "generate_stream")


def run_aiperf(aiperf: str, target: Target, prompts: dict[str, Path], tokenizer: Path, args, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    command = pinned(args.cpu, [
        aiperf, "profile", "--model", target.model, "--tokenizer", str(tokenizer), "--url", target.url,
        *target.aiperf_arguments(args.max_tokens), "--streaming", "--concurrency", str(args.users),
        "--request-count", str(args.requests), "--input-file", str(prompts["text"]), "--custom-dataset-type", "single_turn",
        "--dataset-sampling-strategy", "sequential",
        "--artifact-dir", str(out), "--ui-type", "none", "--no-server-metrics", "--no-gpu-telemetry"])
    subprocess.run(command, check=True)
    export = json.loads(next(out.rglob("profile_export_aiperf.json")).read_text())

    def stat(tag: str, field: str) -> float | None:
        value = export.get(tag) or export.get("records", {}).get(tag) or {}
        return value.get(field) if isinstance(value, dict) else None

    return {"output_tokens_per_s": stat("output_token_throughput", "avg"),
            "output_tokens": stat("total_output_tokens", "avg") or stat("total_osl", "avg"),
            "requests": stat("request_count", "avg"), "failed": stat("error_request_count", "avg") or 0,
            "ttft_p50_s": _ms_to_s(stat("time_to_first_token", "p50")),
            "itl_p50_s": _ms_to_s(stat("inter_token_latency", "p50")),
            "e2e_p50_s": _ms_to_s(stat("request_latency", "p50")),
            "user_tokens_per_s_p50": stat("output_token_throughput_per_user", "p50"),
            "duration_s": stat("benchmark_duration", "avg"), **aiperf_lag(out)}


def aiperf_lag(out: Path) -> dict:
    """aiperf's own delays, the evidence when its figures differ from Locust's: credit issued ->
    request sent (p50 over requests, profile_export.jsonl), and the event-loop stalls its processes
    log ("Event loop for ... is taking too long to run. Overhead: N ms"), which delay every timestamp."""
    records = [json.loads(line)["metadata"] for line in next(out.rglob("profile_export.jsonl")).read_text().splitlines()
               if line.strip()]
    send_lags = sorted((r["request_start_ns"] - r["credit_issued_ns"]) / 1e9 for r in records
                       if r.get("request_start_ns") and r.get("credit_issued_ns"))
    stalls = [float(m.group(1).replace(",", "")) / 1000 for log in out.rglob("aiperf.log")
              for m in re.finditer(r"taking too long to run\. Overhead: ([\d,.]+)ms", log.read_text(errors="replace"))]
    return {"send_lag_p50_s": send_lags[len(send_lags) // 2] if send_lags else None,
            "loop_stalls": len(stalls), "loop_stall_max_s": max(stalls, default=0.0)}


def _ms_to_s(value: float | None) -> float | None:
    return None if value is None else value / 1000.0


def run_locust(target: Target, prompts: dict[str, Path], args, out: Path) -> dict:
    command = pinned(args.cpu, [
        sys.executable, "-m", "triton_eagle.cli", "loadtest", "run", *target.locust_arguments(prompts),
        "--users", str(args.users), "--requests", str(args.requests), "--duration", "3600",
        "--max-tokens", str(args.max_tokens), "--host", LOOPBACK,
        "--out", str(out), "--", "--only-summary"])
    subprocess.run(command, check=True)
    report = json.loads((out / "report.json").read_text())
    return {"output_tokens_per_s": report["output_tokens_per_s"]["overall"],
            "output_tokens": report["output_tokens"], "requests": report["requests"]["completed"],
            "failed": report["requests"]["failed"],
            "ttft_p50_s": report["ttft_s"]["p50"], "itl_p50_s": report["itl_s"]["p50"],
            "e2e_p50_s": report["e2e_latency_s"]["p50"],
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
        ("ITL p50 (ms)", "itl_p50_s", "ms"), ("E2E latency p50 (ms)", "e2e_p50_s", "ms"), ("per-user tokens/s p50", "user_tokens_per_s_p50", "{:.2f}"),
        ("duration (s)", "duration_s", "{:.1f}"),
        ("aiperf: credit -> request sent p50 (ms)", "send_lag_p50_s", "ms"),
        ("aiperf: event-loop stalls logged / longest (ms)", "loop_stalls", "stalls"), ("tool CPU time (s)", "tool_cpu_s", "{:.1f}"),
        ("requests", "requests", "{:.0f}"), ("failed", "failed", "{:.0f}")]


COMPARED = [("output tokens/s", "output_tokens_per_s"), ("TTFT p50", "ttft_p50_s"), ("ITL p50", "itl_p50_s"),
            ("per-user tokens/s p50", "user_tokens_per_s_p50"), ("E2E latency p50", "e2e_p50_s")]


def tool_ratios(runs: list[tuple[str, dict]]) -> dict[str, dict[str, float]]:
    """aiperf / Locust per compared figure, for the two tools of each round (check (b): within 15%)."""
    by_name = dict(runs)
    ratios = {}
    for name in by_name:
        if not name.startswith("aiperf #"):
            continue
        aiperf, locust = by_name[name], by_name.get(name.replace("aiperf", "locust"))
        if locust:
            ratios[name.replace("aiperf ", "round ")] = {
                key: round(aiperf[key] / locust[key], 3) for _, key in COMPARED if aiperf.get(key) and locust.get(key)}
    return ratios


def markdown(endpoint: str, runs: list[tuple[str, dict]], args) -> str:
    """One column per run, in the order they ran; then aiperf / Locust per round."""
    lines = [f"`{endpoint}`: {args.requests} requests, {args.users} concurrent, max_tokens {args.max_tokens}, "
             f"each tool pinned to CPU {args.cpu}", "",
             "| | " + " | ".join(name for name, _ in runs) + " |", "|---|" + "---|" * len(runs)]
    for label, key, fmt in ROWS:
        cells = []
        for _, figures in runs:
            value = figures.get(key)
            if fmt == "stalls" and value is not None:
                cells.append(f"{value} / {figures['loop_stall_max_s'] * 1000:.0f}")
            else:
                cells.append("–" if value is None else f"{value * 1000:.0f}" if fmt == "ms" else fmt.format(value))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    ratios = tool_ratios(runs)
    if ratios:
        lines += ["", "| aiperf / Locust | " + " | ".join(ratios) + " |", "|---|" + "---|" * len(ratios)]
        for label, key in COMPARED:
            lines.append(f"| {label} | " + " | ".join(f"{r.get(key, float('nan')):.3f}" for r in ratios.values()) + " |")
    return "\n".join(lines) + "\n"


def rounds(args, target: Target, metrics_url: str, prompts: dict[str, Path]) -> list[tuple[str, dict]]:
    """`args.rounds` aiperf/Locust pairs against one target, alternating who goes first."""
    tools = {"aiperf": lambda out: run_aiperf(args.aiperf, target, prompts, args.tokenizer, args, out),
             "locust": lambda out: run_locust(target, prompts, args, out)}
    runs = []
    for round_number in range(1, args.rounds + 1):
        for tool in ["aiperf", "locust"] if round_number % 2 else ["locust", "aiperf"]:
            out = args.out / target.endpoint / f"{tool}-{round_number}"
            runs.append((f"{tool} #{round_number}", measured(metrics_url, lambda: tools[tool](out))))
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aiperf", default=str(REPO_ROOT / ".venv-aiperf" / "bin" / "aiperf"))
    parser.add_argument("--model-repository", type=Path, default=REPO_ROOT / "model_repository")
    parser.add_argument("--tokenizer", type=Path, default=REPO_ROOT / "models" / "SmolLM2-135M-Instruct",
                        help="aiperf's tokenizer: the checkpoint folder (a local path; no HF_HUB_OFFLINE)")
    parser.add_argument("--endpoint", nargs="+", choices=ENDPOINTS, default=list(ENDPOINTS),
                        help="openai: chat completions through the OpenAI-compatible server; generate_stream: "
                             "Triton's KServe HTTP endpoint directly (default: both)")
    parser.add_argument("--users", type=int, default=4, help="concurrency of both tools (default 4)")
    parser.add_argument("--requests", type=int, default=24, help="requests per tool (default 24)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--cpu", type=int, default=1, help="the CPU both tools are pinned to (default 1)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="tool pairs per endpoint, alternating who goes first (aiperf, locust, locust, aiperf, ...)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "build" / "aiperf-check")
    args = parser.parse_args(argv)
    if not Path(args.aiperf).is_file():
        raise SystemExit(f"no aiperf at {args.aiperf}: run `make aiperf` (it installs aiperf==0.13.0 in .venv-aiperf)")
    args.out.mkdir(parents=True, exist_ok=True)
    prompts = write_prompts(args.out, args.requests)
    http, grpc, metrics, openai_port = free_ports(4)
    results, tables = {}, []
    with ExitStack() as stack:
        server = stack.enter_context(TritonServer(args.model_repository, http_port=http, grpc_port=grpc,
                                                  metrics_port=metrics))
        for endpoint in args.endpoint:
            if endpoint == "openai":
                api = stack.enter_context(OpenAIServer(server.grpc_url, openai_port, metrics_url=server.metrics_url))
                target = Target(endpoint, api.url, api.port, api.served_model_name)
            else:
                target = Target(endpoint, f"http://{server.http_url}", http)
            warm_up(server.grpc_url)
            runs = rounds(args, target, server.metrics_url, prompts)
            results[endpoint] = {"runs": dict(runs), "aiperf_over_locust": tool_ratios(runs)}
            tables.append(markdown(endpoint, runs, args))
    (args.out / "crosscheck.json").write_text(json.dumps(results, indent=2))
    (args.out / "crosscheck.md").write_text("\n".join(tables))
    print("\n".join(tables))
    return 0


def warm_up(grpc_url: str) -> None:
    """One short request before the first run, so neither tool pays the first request's set-up."""
    import asyncio

    import tritonclient.grpc.aio as grpcclient

    from triton_eagle.client import request_fields, stream_generate

    async def one():
        client = grpcclient.InferenceServerClient(grpc_url)
        try:
            await stream_generate(client, request_fields("Hello", max_tokens=8))
        finally:
            await client.close()

    started = time.monotonic()
    asyncio.run(one())
    print(f"warm-up request: {time.monotonic() - started:.1f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
