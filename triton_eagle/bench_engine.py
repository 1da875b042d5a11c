"""Benchmark the reference engine in-process: tokens/s with drafting on and off.

Both engines share one target model (same weights, same prompts, one run), so the
ratio is measured side by side. Prints JSON with --json.
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


async def bench(config_path: str, levels: list[int], max_tokens: int, per_level: int) -> dict:
    config = load_engine_config(config_path)
    draft_on = ReferenceEngine.from_config(config)
    draft_off = ReferenceEngine(draft_on.target, None, draft_len=0, max_batch_size=config.max_batch_size,
                                max_num_tokens=config.max_num_tokens, max_seq_len=config.max_seq_len)
    all_prompts = load_benchmark_prompts(config.tokenizer_dir)
    report: dict = {"concurrency": {}, "max_tokens": max_tokens, "draft_len": draft_on.draft_len}
    identical = True
    on_stats = []
    try:
        # warm-up: first calls pay for lazy allocations
        await run_requests(draft_off, all_prompts[:1], 1, 4)
        await run_requests(draft_on, all_prompts[:1], 1, 4)
        for level in levels:
            count = per_level or max(4, 2 * level)
            prompts = [all_prompts[i % len(all_prompts)] for i in range(count)]
            off_out, _, off_tps = await run_requests(draft_off, prompts, level, max_tokens)
            on_out, stats, on_tps = await run_requests(draft_on, prompts, level, max_tokens)
            on_stats.extend(stats)
            identical = identical and off_out == on_out
            report["concurrency"][str(level)] = {
                "requests": count,
                "draft_off_tokens_per_s": round(off_tps, 2),
                "draft_on_tokens_per_s": round(on_tps, 2),
                "speedup": round(on_tps / off_tps, 3),
                "acceptance_length": round(pooled_acceptance_length(stats), 3),
            }
    finally:
        draft_on.shutdown()
        draft_off.shutdown()
    report["acceptance_length"] = round(pooled_acceptance_length(on_stats), 3)
    report["greedy_identical"] = identical
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    first, last = str(levels[0]), str(levels[-1])
    report["batching_gain_draft_off"] = round(
        report["concurrency"][last]["draft_off_tokens_per_s"] / report["concurrency"][first]["draft_off_tokens_per_s"], 2)
    return report


def run(args) -> int:
    report = asyncio.run(bench(args.config, args.concurrency, args.max_tokens, args.requests_per_level))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for level, row in report["concurrency"].items():
            print(f"concurrency {level:>3}: draft off {row['draft_off_tokens_per_s']:8.1f} tok/s   "
                  f"draft on {row['draft_on_tokens_per_s']:8.1f} tok/s   x{row['speedup']}")
        print(f"acceptance length {report['acceptance_length']}  greedy identical {report['greedy_identical']}  "
              f"peak RSS {report['peak_rss_mb']} MB")
    return 0 if report["greedy_identical"] else 1
