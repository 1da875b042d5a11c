"""The end-of-run report: report.json, report.md and PNG plots, from the raw samples."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from loadtest import plots
from loadtest.metrics import category_sort_key, request_metrics, summarize
from loadtest.samples import OK, RequestSample, read_samples

SAMPLES_FILE = "samples.jsonl"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
LATENCY_PNG = "latency_distributions.png"
ACCEPTANCE_PNG = "acceptance_by_category.png"

# (report key, row label, scale for display, unit)
DISTRIBUTION_ROWS = (
    ("ttft_s", "TTFT", 1000, "ms"),
    ("itl_s", "ITL (per token)", 1000, "ms"),
    ("inter_chunk_latency_s", "inter-chunk latency", 1000, "ms"),
    ("e2e_latency_s", "E2E latency", 1, "s"),
    ("user_tokens_per_s", "per-user tokens/s (1/ITL)", 1, "tok/s"),
    ("e2e_tokens_per_s", "E2E tokens/s per request", 1, "tok/s"),
    ("output_tokens_per_s", "output tokens/s, all users (per window)", 1, "tok/s"),
    ("request_throughput", "requests/s (per window)", 1, "req/s"),
    ("output_tokens_per_request", "output tokens per request", 1, "tokens"),
    ("input_tokens_per_request", "input tokens per request", 1, "tokens"),
    ("tokens_per_response", "tokens per streamed response", 1, "tokens"),
)


def _number(value, scale: float = 1) -> str:
    if value is None:
        return "–"
    scaled = value * scale
    return f"{scaled:.3g}" if abs(scaled) < 100 else f"{scaled:.0f}"


def acceptance_table(acceptance: dict) -> list[str]:
    """One row, categories as columns in the model cards' order (writing … humanities), overall last."""
    by_category = acceptance.get("by_category", {})
    columns = sorted(by_category, key=category_sort_key) + ["overall"]
    values = [by_category.get(c) for c in columns[:-1]] + [acceptance.get("overall")]
    return ["| " + " | ".join(columns) + " |",
            "|" + "---|" * len(columns),
            "| " + " | ".join("–" if v is None else f"{v:.2f}" for v in values) + " |"]


def markdown(report: dict) -> str:
    config = report.get("config", {})
    title = (f"# Load test: {config.get('workload', '?')} over {'+'.join(report.get('protocols', [])) or '?'}, "
             f"{config.get('users', '?')} users, {config.get('run_time', '?')}")
    requests = report["requests"]
    lines = [title, "",
             f"Output token throughput **{report['output_tokens_per_s']['overall']:.2f} tok/s** "
             f"({report['output_tokens']} tokens in {report['duration_s']:.1f} s, first request sent → "
             f"last response received); request throughput **{report['request_throughput']['overall']:.3f} req/s**.",
             f"Requests: {requests['completed']} completed, {requests['failed']} failed, "
             f"{requests['cut_at_end']} cut at the end of the run (their tokens count in throughput, "
             f"their latencies do not).", "",
             "| metric | unit | p50 | p90 | p99 | mean | n |", "|---|---|---|---|---|---|---|"]
    for key, label, scale, unit in DISTRIBUTION_ROWS:
        row = report.get(key)
        if not row:
            continue
        lines.append(f"| {label} | {unit} | {_number(row.get('p50'), scale)} | {_number(row.get('p90'), scale)} | "
                     f"{_number(row.get('p99'), scale)} | {_number(row.get('mean', row.get('overall')), scale)} | "
                     f"{row.get('count', '')} |")
    acceptance = report["acceptance_length"]
    lines += ["", f"## Acceptance length (1 + accepted drafts / drafting steps; "
                  f"{acceptance['accepted_draft_tokens']} of {acceptance['draft_tokens']} drafts accepted "
                  f"over {acceptance['drafting_steps']} steps)", ""]
    lines += acceptance_table(acceptance)
    failures = report["failures"]
    lines += ["", f"## Failures: {failures['count']}"]
    if failures["count"]:
        lines += ["", "| reason | count | first error |", "|---|---|---|"]
        for reason, count in failures["by_reason"].items():
            example = failures["examples"].get(reason, "").replace("|", "\\|").replace("\n", " ")[:160]
            lines.append(f"| {reason} | {count} | {example} |")
    return "\n".join(lines) + "\n"


def build_report(samples: Sequence[RequestSample], config: dict | None = None, window_s: float = 1.0) -> dict:
    report = {"config": dict(config or {}), "protocols": sorted({s.protocol for s in samples})}
    report.update(summarize(samples, window_s))
    return report


def write_report(out_dir: str | Path, config: dict | None = None, window_s: float = 1.0) -> dict:
    """Read DIR/samples.jsonl, write DIR/report.json, report.md and the plots; return the report."""
    out_dir = Path(out_dir)
    samples_path = out_dir / SAMPLES_FILE
    samples = read_samples(samples_path) if samples_path.is_file() else []
    report = build_report(samples, config, window_s)
    title = f"{report['config'].get('workload', '')} · {'+'.join(report['protocols'])} · " \
            f"{report['config'].get('users', '?')} users"
    completed = [request_metrics(s) for s in samples if s.outcome == OK]
    report["plots"] = {
        "latency": str(plots.latency_distributions([m.ttft_s for m in completed if m.ttft_s is not None],
                                                   [m.itl_s for m in completed if m.itl_s is not None],
                                                   out_dir / LATENCY_PNG, title)),
    }
    acceptance = report["acceptance_length"]
    if acceptance["overall"] is not None:
        report["plots"]["acceptance"] = str(plots.acceptance_by_category(
            acceptance["by_category"], acceptance["overall"], out_dir / ACCEPTANCE_PNG, f"Acceptance length · {title}"))
    (out_dir / REPORT_JSON).write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / REPORT_MD).write_text(markdown(report))
    return report

