"""MT-Bench acceptance of the EAGLE-3 head and the speedup it buys, on the reference engine.

The 80 MT-Bench first turns, greedy, draft length and target weights (reference.weights) from
the engine YAML (3, q4), max_tokens 256.
Acceptance length per category = mean tokens per engine step = 1 + accepted drafts /
drafting steps (the seeds' "acceptance rate"), pooled over the category's questions.
Speedup = output tokens/s with drafting (under the YAML's max_concurrency / draft_len_schedule)
/ without, one target model shared by the engines, run side by side at each concurrency: all 80
questions at the highest level, an interleaved subset at the lower levels. The acceptance table
comes from one more run of all 80 at the highest level that drafts in every step. Greedy outputs with
and without drafting must be identical.
"""
from __future__ import annotations

import argparse
import asyncio
import json

from python_backend.config import load_engine_config
from python_backend.reference.engine import ReferenceEngine
from triton_eagle.bench_engine import engine_pair, pooled_acceptance_length, run_requests
from triton_eagle.prompts import MTBENCH_CATEGORIES, mtbench_questions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="model_repository/tensorrt_llm/engine.yaml",
                        help="engine YAML (reference engine with speculative_config)")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16],
                        help="levels; the highest runs all questions")
    parser.add_argument("--requests-per-level", type=int, default=0,
                        help="questions at the lower levels (default 2 x concurrency, at least 8)")
    parser.add_argument("--draft-len", type=int, default=0,
                        help="draft this many tokens per step instead of the YAML's max_draft_len (e.g. 3: "
                             "the head's MT-Bench figures, while the embedded default drafts 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def with_draft_len(config, draft_len: int):
    """`config` drafting `draft_len` tokens per step (its draft_len_schedule dropped: it names max_draft_len)."""
    spec = config.speculative_config.model_copy(update={"max_draft_len": draft_len, "draft_len_schedule": None})
    return config.model_copy(update={"speculative_config": spec})


async def evaluate(config_path: str, levels: list[int], max_tokens: int, per_level: int, draft_len: int = 0) -> dict:
    from ensemble.tokenizer import load_tokenizer

    config = load_engine_config(config_path)
    if draft_len:
        config = with_draft_len(config, draft_len)
    draft_on, draft_off = engine_pair(config)
    if draft_on.draft_len == 0:
        draft_on.shutdown()
        draft_off.shutdown()
        raise SystemExit(f"{config_path}: speculative decoding is off (max_draft_len 0); nothing to evaluate")
    # the head's acceptance is measured with drafting in every step, whatever the YAML's load policy
    every_step = ReferenceEngine(draft_on.target, draft_on.decoder.draft, draft_len=draft_on.draft_len,
                                 max_batch_size=config.max_batch_size, max_num_tokens=config.max_num_tokens,
                                 max_seq_len=config.max_seq_len)
    tokenizer = load_tokenizer(config.tokenizer_dir)
    questions = mtbench_questions()
    by_category = {c: [q for q in questions if q.category == c] for c in MTBENCH_CATEGORIES}
    interleaved = [q for group in zip(*by_category.values()) for q in group]   # any prefix mixes categories
    prompts = [tokenizer.render_chat([{"role": "user", "content": q.text}]) for q in interleaved]
    report: dict = {"questions": len(prompts), "max_tokens": max_tokens, "draft_len": draft_on.draft_len,
                    "weights": config.reference.weights,
                    "speculative_model_dir": config.speculative_config.speculative_model_dir,
                    "levels": {}}
    identical = True
    try:
        await run_requests(draft_off, prompts[:1], 1, 4)     # warm-up: lazy allocations
        await run_requests(draft_on, prompts[:1], 1, 4)
        for level in sorted(levels):
            count = len(prompts) if level == max(levels) else min(len(prompts), per_level or max(8, 2 * level))
            off_out, _, off_tps = await run_requests(draft_off, prompts[:count], level, max_tokens)
            on_out, on_stats, on_tps = await run_requests(draft_on, prompts[:count], level, max_tokens)
            identical = identical and off_out == on_out
            report["levels"][str(level)] = {
                "requests": count, "output_tokens": sum(len(o) for o in on_out),
                "draft_off_tokens_per_s": round(off_tps, 2), "draft_on_tokens_per_s": round(on_tps, 2),
                "speedup": round(on_tps / off_tps, 3),
                "acceptance_length": round(pooled_acceptance_length(on_stats), 3)}
            if level == max(levels):
                every_out, on_stats, _ = await run_requests(every_step, prompts[:count], level, max_tokens)
                identical = identical and every_out == off_out
                per_category = {c: [] for c in MTBENCH_CATEGORIES}
                for question, stats in zip(interleaved, on_stats):
                    per_category[question.category].append(stats)
                report["acceptance_length"] = {c: round(pooled_acceptance_length(s), 2)
                                               for c, s in per_category.items()}
                report["acceptance_length_mean"] = round(pooled_acceptance_length(on_stats), 3)
    finally:
        draft_on.shutdown()
        draft_off.shutdown()
        every_step.shutdown()
    report["speedup"] = {level: row["speedup"] for level, row in report["levels"].items()}
    report["greedy_identical"] = identical
    return report


def run(args) -> int:
    report = asyncio.run(evaluate(args.config, args.concurrency, args.max_tokens, args.requests_per_level,
                                  args.draft_len))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"MT-Bench acceptance length (mean tokens per step, draft length {report['draft_len']}, "
              f"{report['questions']} questions, max_tokens {report['max_tokens']}):")
        print("  " + ", ".join(f"{c} {v:.2f}" for c, v in report["acceptance_length"].items())
              + f"  (all {report['acceptance_length_mean']:.2f})")
        for level, row in report["levels"].items():
            print(f"concurrency {level:>3} ({row['requests']} requests): draft off {row['draft_off_tokens_per_s']:7.1f} "
                  f"tok/s, draft on {row['draft_on_tokens_per_s']:7.1f} tok/s, x{row['speedup']:.2f}")
        print(f"greedy output identical with and without drafting: {report['greedy_identical']}")
    return 0 if report["greedy_identical"] else 1
