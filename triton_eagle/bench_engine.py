"""Benchmark the reference engine in-process: tokens/s with drafting on and off.

Both engines share one target model (same weights, same prompts, one run), so the
ratio is measured side by side. When the YAML's `reference.weights` is not float32, a
float32 pair runs beside it, level by level, under "float32" in the report: every gain over
float32 is a same-run ratio. Prints JSON with --json.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time

from python_backend.config import load_engine_config
from python_backend.protocol import SamplingParams
from python_backend.reference.engine import ReferenceEngine
from triton_eagle.prompts import load_benchmark_prompts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="model_repository/tensorrt_llm/engine.yaml",
                        help="engine YAML (reference engine)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--max-tokens", type=int, default=256,
                        help="tokens per answer (256: the MT-Bench evaluation length of eval-acceptance)")
    parser.add_argument("--requests-per-level", type=int, default=0,
                        help="requests per concurrency level (default: max(4, 2 x concurrency))")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


async def run_requests(engine, prompts: list[list[int]], concurrency: int, max_tokens: int):
    """All prompts with `concurrency` in flight: (outputs, final stats, output tokens/s), by index."""
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    semaphore = asyncio.Semaphore(concurrency)
    outputs: list[list[int]] = [[] for _ in prompts]
    stats: list = [None] * len(prompts)

    async def one(index: int) -> None:
        async with semaphore:
            async for step in engine.generate_async(prompts[index], params):
                outputs[index].extend(step.token_ids_diff)
                if step.finished:
                    stats[index] = step.stats

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(len(prompts))))
    return outputs, stats, sum(len(o) for o in outputs) / (time.perf_counter() - start)


def pooled_acceptance_length(stats) -> float:
    steps = sum(s.drafting_steps for s in stats)
    return 1.0 + sum(s.total_accepted_draft_tokens for s in stats) / steps if steps else 1.0


def engine_pair(config) -> tuple[ReferenceEngine, ReferenceEngine]:
    """(drafting on, drafting off) for `config`, sharing one target model."""
    draft_on = ReferenceEngine.from_config(config)
    draft_off = ReferenceEngine(draft_on.target, None, draft_len=0, max_batch_size=config.max_batch_size,
                                max_num_tokens=config.max_num_tokens, max_seq_len=config.max_seq_len)
    return draft_on, draft_off


def with_weights(config, weight_format: str):
    return config.model_copy(update={"reference": config.reference.model_copy(update={"weights": weight_format})})


async def measure_level(draft_on, draft_off, prompts, level: int, max_tokens: int) -> tuple[dict, list, bool]:
    """One concurrency level, drafting off then on: (report row, final stats with drafting, outputs identical)."""
    off_out, _, off_tps = await run_requests(draft_off, prompts, level, max_tokens)
    on_out, stats, on_tps = await run_requests(draft_on, prompts, level, max_tokens)
    row = {
        "requests": len(prompts),
        "draft_off_tokens_per_s": round(off_tps, 2),
        "draft_on_tokens_per_s": round(on_tps, 2),
        "speedup": round(on_tps / off_tps, 3),
        "acceptance_length": round(pooled_acceptance_length(stats), 3),
    }
    return row, stats, off_out == on_out


async def bench(config_path: str, levels: list[int], max_tokens: int, per_level: int) -> dict:
    """The YAML's weights; when they are not float32, float32 too, level by level in the same run."""
    config = load_engine_config(config_path)
    weights = config.reference.weights
    pairs = {weights: engine_pair(config)}
    if weights != "float32":
        pairs["float32"] = engine_pair(with_weights(config, "float32"))
    all_prompts = load_benchmark_prompts(config.tokenizer_dir)
    draft_len = pairs[weights][0].draft_len
    report: dict = {"weights": weights, "concurrency": {}, "max_tokens": max_tokens, "draft_len": draft_len}
    if weights != "float32":
        report["float32"] = {"concurrency": {}}
    rows = {name: report["concurrency"] if name == weights else report["float32"]["concurrency"] for name in pairs}
    identical = True
    on_stats = []
    try:
        for draft_on, draft_off in pairs.values():   # warm-up: first calls pay for lazy allocations
            await run_requests(draft_off, all_prompts[:1], 1, 4)
            await run_requests(draft_on, all_prompts[:1], 1, 4)
        for level in levels:
            count = per_level or max(4, 2 * level)
            prompts = [all_prompts[i % len(all_prompts)] for i in range(count)]
            for name, (draft_on, draft_off) in pairs.items():
                row, stats, same = await measure_level(draft_on, draft_off, prompts, level, max_tokens)
                rows[name][str(level)] = row
                identical = identical and same
                if name == weights:
                    on_stats.extend(stats)
    finally:
        for draft_on, draft_off in pairs.values():
            draft_on.shutdown()
            draft_off.shutdown()
    report["acceptance_length"] = round(pooled_acceptance_length(on_stats), 3)
    report["greedy_identical"] = identical
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    first, last = str(levels[0]), str(levels[-1])
    report["batching_gain_draft_off"] = round(
        report["concurrency"][last]["draft_off_tokens_per_s"] / report["concurrency"][first]["draft_off_tokens_per_s"], 2)
    if weights != "float32":
        # the yardstick: each level's best over float32 without drafting, same run
        report["best_over_float32_draft_off"] = {
            level: round(max(row["draft_on_tokens_per_s"], row["draft_off_tokens_per_s"])
                         / report["float32"]["concurrency"][level]["draft_off_tokens_per_s"], 3)
            for level, row in report["concurrency"].items()}
    return report


def run(args) -> int:
    report = asyncio.run(bench(args.config, args.concurrency, args.max_tokens, args.requests_per_level))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        tables = [(report["weights"], report["concurrency"])]
        if "float32" in report:
            tables.append(("float32", report["float32"]["concurrency"]))
        for name, table in tables:
            for level, row in table.items():
                print(f"{name:>7} concurrency {level:>3}: draft off {row['draft_off_tokens_per_s']:8.1f} tok/s   "
                      f"draft on {row['draft_on_tokens_per_s']:8.1f} tok/s   x{row['speedup']}")
        for level, ratio in report.get("best_over_float32_draft_off", {}).items():
            print(f"concurrency {level:>3}: best of {report['weights']} = {ratio}x float32 without drafting")
        print(f"acceptance length {report['acceptance_length']}  greedy identical {report['greedy_identical']}  "
              f"peak RSS {report['peak_rss_mb']} MB")
    return 0 if report["greedy_identical"] else 1
