"""Quality of the quantized weights against float32: perplexity and greedy agreement, one fixed text set.

The text set: MT-Bench first turns (chat template, interleaved by category) and the float32
model's own greedy answers to them. Each weight format then scores those answers (perplexity
of the answer tokens given the prompt, teacher-forced) and answers the same prompts greedily:
answers identical to float32's and the mean common prefix, in tokens. A format passes when its
perplexity is within --max-perplexity-change (1%) of float32's. Exit status 1 if one fails.
"""
from __future__ import annotations

import argparse
import asyncio
import json

import numpy as np

from python_backend.config import load_engine_config
from python_backend.reference.checkpoint import load_llama_checkpoint
from python_backend.reference.engine import ReferenceEngine
from python_backend.reference.fast_linear import WEIGHT_FORMATS
from python_backend.reference.llama import LlamaModel
from triton_eagle.bench_engine import run_requests
from triton_eagle.prompts import MTBENCH_CATEGORIES, mtbench_questions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="model_repository/tensorrt_llm/engine.yaml",
                        help="engine YAML: the model folder and the format under test (reference.weights)")
    parser.add_argument("--weights", nargs="+", choices=WEIGHT_FORMATS[1:], default=None,
                        help="formats to compare with float32 (default: the YAML's, or all quantized ones)")
    parser.add_argument("--questions", type=int, default=24, help="MT-Bench first turns (3 per category)")
    parser.add_argument("--answer-tokens", type=int, default=64, help="float32 greedy answer length scored")
    parser.add_argument("--agreement-tokens", type=int, default=32, help="greedy answer length compared")
    parser.add_argument("--max-perplexity-change", type=float, default=0.01)
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def chat_prompts(tokenizer_dir: str, count: int) -> list[list[int]]:
    from ensemble.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir)
    by_category = {c: [q for q in mtbench_questions() if q.category == c] for c in MTBENCH_CATEGORIES}
    interleaved = [q for group in zip(*by_category.values()) for q in group]
    return [tokenizer.render_chat([{"role": "user", "content": q.text}]) for q in interleaved[:count]]


def greedy_answers(model: LlamaModel, prompts: list[list[int]], max_tokens: int) -> list[list[int]]:
    engine = ReferenceEngine(model, None, draft_len=0, max_batch_size=len(prompts))
    try:
        return asyncio.run(run_requests(engine, prompts, len(prompts), max_tokens))[0]
    finally:
        engine.shutdown()


def perplexity(model: LlamaModel, prompts: list[list[int]], answers: list[list[int]]) -> float:
    """exp(mean negative log-likelihood of each answer token given the prompt and the answer so far)."""
    total_nll, total_tokens = 0.0, 0
    for prompt, answer in zip(prompts, answers):
        if not answer:
            continue
        ids = np.asarray(prompt + answer, dtype=np.int64)
        # logits at the last prompt token and every answer token but the last predict the answer
        logits = model.forward([ids], [model.new_cache()], [len(answer) + 1]).logits[0][:-1].astype(np.float64)
        logits -= logits.max(axis=-1, keepdims=True)
        log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
        total_nll -= log_probs[np.arange(len(answer)), answer].sum()
        total_tokens += len(answer)
    return float(np.exp(total_nll / total_tokens))


def common_prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def evaluate(model_dir: str, tokenizer_dir: str, formats: list[str], questions: int, answer_tokens: int,
             agreement_tokens: int, max_change: float) -> dict:
    config, weights = load_llama_checkpoint(model_dir)
    prompts = chat_prompts(tokenizer_dir, questions)
    reference = LlamaModel(config, weights)
    answers = greedy_answers(reference, prompts, answer_tokens)
    reference_short = [answer[:agreement_tokens] for answer in answers]
    reference_perplexity = perplexity(reference, prompts, answers)
    report = {"questions": len(prompts), "answer_tokens": answer_tokens, "agreement_tokens": agreement_tokens,
              "float32": {"perplexity": round(reference_perplexity, 4)}, "weights": {}}
    del reference
    for weight_format in formats:
        model = LlamaModel(config, weights, weight_format)
        format_perplexity = perplexity(model, prompts, answers)
        short = greedy_answers(model, prompts, agreement_tokens)
        change = format_perplexity / reference_perplexity - 1
        report["weights"][weight_format] = {
            "perplexity": round(format_perplexity, 4),
            "perplexity_change": round(change, 5),
            "answers_identical": sum(a == b for a, b in zip(short, reference_short)),
            "mean_common_prefix_tokens": round(float(np.mean([common_prefix(a, b)
                                                              for a, b in zip(short, reference_short)])), 2),
            "passes": abs(change) <= max_change,
        }
    report["passes"] = all(row["passes"] for row in report["weights"].values())
    return report


def run(args) -> int:
    config = load_engine_config(args.config)
    formats = args.weights or ([config.reference.weights] if config.reference.weights != "float32"
                               else list(WEIGHT_FORMATS[1:]))
    report = evaluate(config.model, config.tokenizer_dir, formats, args.questions, args.answer_tokens,
                      args.agreement_tokens, args.max_perplexity_change)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['questions']} MT-Bench first turns, float32's {report['answer_tokens']}-token greedy "
              f"answers: float32 perplexity {report['float32']['perplexity']}")
        for name, row in report["weights"].items():
            print(f"{name:>7}: perplexity {row['perplexity']} ({row['perplexity_change']:+.2%}), greedy "
                  f"{report['agreement_tokens']}-token answers identical {row['answers_identical']}/"
                  f"{report['questions']}, mean common prefix {row['mean_common_prefix_tokens']}  "
                  f"{'pass' if row['passes'] else 'FAIL'}")
    return 0 if report["passes"] else 1
