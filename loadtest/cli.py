"""Locust load tests of the ensemble: `run` (one load level), `sweep` (concurrency levels,
optionally against a drafting-off twin), `report` (re-render a run's report from its samples).

    triton-eagle loadtest run --users 8 --duration 60 --protocol grpc --workload mt-bench --out DIR
    triton-eagle loadtest run ... -- --loglevel DEBUG        (anything after -- goes to Locust)
    triton-eagle loadtest sweep --users 1 2 4 8 --model-repository model_repository \\
        --baseline-draft-off --out DIR
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from loadtest.report import REPORT_JSON, write_report
from loadtest.runner import USER_CLASSES, RunOptions, read_report, run_locust

BUILD_DIR = Path(__file__).resolve().parents[1] / "build" / "loadtest"


def _shared_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per run (default 60)")
    parser.add_argument("--protocol", choices=sorted(USER_CLASSES), default="grpc",
                        help="grpc: tritonclient.grpc streaming; http: generate_stream (SSE); "
                             "openai: streamed chat completions through the OpenAI-compatible server")
    parser.add_argument("--workload", default="mt-bench",
                        help="mt-bench (80 questions, 8 categories), synthetic (fixed lengths), or a JSONL file")
    parser.add_argument("--out", type=Path, required=True, help="folder for samples, report and plots")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--openai-port", type=int, default=9000)
    parser.add_argument("--max-tokens", type=int, default=128, help="mt-bench / JSONL max_tokens (default 128)")
    parser.add_argument("--input-tokens", type=int, default=128, help="synthetic: words (≈ tokens) per prompt")
    parser.add_argument("--output-tokens", type=int, default=128, help="synthetic: tokens per answer (forced)")
    parser.add_argument("--request-timeout", type=float, default=300.0,
                        help="seconds until a request without its final response is a timeout failure")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="loadtest_command", required=True)

    run = sub.add_parser("run", help="one load level (Locust, headless)")
    run.add_argument("--users", type=int, default=8, help="concurrent users, one stream each (default 8)")
    _shared_arguments(run)
    run.add_argument("--spawn-rate", type=float, help="users started per second (default: all at once)")
    run.add_argument("--requests", type=int, default=0,
                     help="stop after this many requests in all (--duration still bounds the run; local runs)")
    run.add_argument("--workers", type=int, default=0,
                     help="distributed mode: a Locust master and this many workers on loopback")
    run.add_argument("--csv", help="Locust's own CSV statistics (file prefix)")
    run.add_argument("--html", help="Locust's own HTML report")
    run.add_argument("--web", action="store_true", help="Locust's web UI instead of a headless run")
    run.add_argument("locust_args", nargs=argparse.REMAINDER, help="after --: passed to Locust verbatim")

    sweep = sub.add_parser("sweep", help="concurrency levels, one Pareto plot (optionally drafting on vs off)")
    sweep.add_argument("--users", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32], help="levels")
    _shared_arguments(sweep)
    sweep.add_argument("--model-repository", type=Path,
                       help="serve this repository here (free loopback ports) instead of --host/--*-port")
    sweep.add_argument("--label", help="this configuration's curve label (default: drafting on / repository name)")
    baseline = sweep.add_mutually_exclusive_group()
    baseline.add_argument("--baseline-repository", type=Path,
                          help="a second repository to sweep the same way, drawn on the same plot")
    baseline.add_argument("--baseline-draft-off", action="store_true",
                          help="the second configuration is --model-repository with drafting off "
                               f"(a copy made under {BUILD_DIR})")
    sweep.add_argument("--baseline-label", help="the second curve's label")
    sweep.add_argument("--simulated-profile",
                       help="sweep a seed deployment's SIMULATED engine (python_backend/simulated/profiles/), "
                            "drafting on and off, beside the curves the profile predicts")

    report = sub.add_parser("report", help="re-render report.json/.md and plots from DIR/samples.jsonl")
    report.add_argument("--out", type=Path, required=True)


def _options(args, users: int) -> RunOptions:
    return RunOptions(users=users, duration_s=args.duration, out=args.out, protocol=args.protocol,
                      workload=args.workload, host=args.host, grpc_port=args.grpc_port, http_port=args.http_port,
                      openai_port=args.openai_port,
                      max_tokens=args.max_tokens, input_tokens=args.input_tokens, output_tokens=args.output_tokens,
                      request_timeout_s=args.request_timeout)


def _print_summary(report: dict, out: Path) -> None:
    requests, failures = report["requests"], report["failures"]
    ttft, itl, user = report["ttft_s"], report["itl_s"], report["user_tokens_per_s"]
    acceptance = report["acceptance_length"]["overall"]

    def ms(value):
        return "–" if value is None else f"{value * 1000:.0f} ms"

    def plain(value):
        return "–" if value is None else f"{value:.2f}"

    print(f"output {report['output_tokens_per_s']['overall']:.2f} tok/s, "
          f"{report['request_throughput']['overall']:.3f} req/s; TTFT p50 {ms(ttft['p50'])} p99 {ms(ttft['p99'])}; "
          f"ITL p50 {ms(itl['p50'])}; per-user p50 {plain(user['p50'])} tok/s; "
          f"acceptance length {plain(acceptance)}")
    reasons = f" {failures['by_reason']}" if failures["by_reason"] else ""
    print(f"requests: {requests['completed']} completed, {requests['failed']} failed{reasons}, "
          f"{requests['cut_at_end']} cut at the end; report {out / REPORT_JSON}")


def _run(args) -> int:
    locust_args = args.locust_args[1:] if args.locust_args[:1] == ["--"] else args.locust_args
    options = _options(args, args.users)
    options.spawn_rate, options.workers, options.web = args.spawn_rate, args.workers, args.web
    options.requests = args.requests
    options.csv, options.html, options.locust_args = args.csv, args.html, locust_args
    code = run_locust(options)
    _print_summary(read_report(args.out), args.out)
    return code


def _sweep(args) -> int:
    from loadtest.baseline import draft_off_repository
    from loadtest.sweep import Target, run_sweep

    if args.simulated_profile:
        from loadtest.sweep import expected_curves, simulated_targets
        from python_backend.simulated.profile import SIMULATION_LABEL

        targets = simulated_targets(args.simulated_profile, BUILD_DIR / "simulated")
        expected = expected_curves(args.simulated_profile, args.users, args.max_tokens)
        sweep = run_sweep(args.users, _options(args, 1), targets, expected,
                          title_note=f"{args.simulated_profile}, {SIMULATION_LABEL}\n")
        print((args.out / "sweep.md").read_text())
        return 0
    if args.baseline_draft_off and args.model_repository is None:
        raise SystemExit("--baseline-draft-off copies --model-repository: give it too")
    has_baseline = args.baseline_draft_off or args.baseline_repository is not None
    main_label = args.label or ("drafting on" if args.baseline_draft_off else
                                (args.model_repository.name if args.model_repository else "server"))
    targets = [Target(main_label, args.model_repository)]
    if args.baseline_draft_off:
        copy = draft_off_repository(args.model_repository, BUILD_DIR / f"{args.model_repository.resolve().name}-draft-off")
        targets.append(Target(args.baseline_label or "drafting off", copy))
    elif has_baseline:
        targets.append(Target(args.baseline_label or args.baseline_repository.name, args.baseline_repository))
    sweep = run_sweep(args.users, _options(args, 1), targets)
    print((args.out / "sweep.md").read_text())
    print(json.dumps(sweep["curves"], indent=2))
    return 0


def _report(args) -> int:
    previous = args.out / REPORT_JSON
    config = json.loads(previous.read_text()).get("config", {}) if previous.is_file() else {}
    _print_summary(write_report(args.out, config), args.out)
    return 0


def run(args) -> int:
    return {"run": _run, "sweep": _sweep, "report": _report}[args.loadtest_command](args)
