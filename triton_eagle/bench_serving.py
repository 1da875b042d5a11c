"""Benchmark the serving overhead: tokens/s through the Triton ensemble (gRPC streaming) and
through the OpenAI-compatible server in front of it, versus the same engine called in-process,
same prompts and lengths, one run.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from python_backend.config import load_engine_config
from python_backend.protocol import SamplingParams
from python_backend.reference.engine import ReferenceEngine
from triton_eagle.client import request_fields, stream_generate
from triton_eagle.openai_api.bench import openai_tokens_per_s
from triton_eagle.prompts import MTBENCH_CATEGORIES, mtbench_questions
from triton_eagle.tritonserver import TritonServer, free_ports


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-repository", default="model_repository")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--max-tokens", type=int, default=48,
                        help="output tokens per request (fixed: min_length = max_tokens)")
    parser.add_argument("--waves", type=int, default=2, help="requests per level = waves x concurrency")
    parser.add_argument("--json", action="store_true")


def _questions(count: int) -> list[str]:
    questions = mtbench_questions()
    by_category = [[q.text for q in questions if q.category == c] for c in MTBENCH_CATEGORIES]
    interleaved = [text for group in zip(*by_category) for text in group]
    return [interleaved[i % len(interleaved)] for i in range(count)]


async def _through_ensemble(grpc_url: str, texts: list[str], concurrency: int, max_tokens: int):
    import tritonclient.grpc.aio as grpcclient

    queue: asyncio.Queue[str] = asyncio.Queue()
    for text in texts:
        queue.put_nowait(text)
    tokens = 0
    errors: list[str] = []

    async def worker():
        nonlocal tokens
        async with grpcclient.InferenceServerClient(grpc_url) as client:
            while not queue.empty():
                text = queue.get_nowait()
                fields = request_fields(text, max_tokens=max_tokens, min_length=max_tokens)
                generation = await stream_generate(client, fields)
                if generation.error:
                    errors.append(generation.error)
                tokens += int(generation.stats.get("num_output_tokens", 0))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} ensemble requests failed, first: {errors[0]}")
    return tokens / elapsed


async def _in_process(engine, prompts: list[list[int]], concurrency: int, max_tokens: int):
    params = SamplingParams(max_tokens=max_tokens, min_tokens=max_tokens)
    semaphore = asyncio.Semaphore(concurrency)
    tokens = 0

    async def one(prompt):
        nonlocal tokens
        async with semaphore:
            async for step in engine.generate_async(prompt, params):
                tokens += len(step.token_ids_diff)

    started = time.perf_counter()
    await asyncio.gather(*(one(p) for p in prompts))
    return tokens / (time.perf_counter() - started)


def bench(repository: str, levels: list[int], max_tokens: int, waves: int) -> dict:
    from ensemble.tokenizer import load_tokenizer

    config = load_engine_config(Path(repository) / "tensorrt_llm" / "engine.yaml")
    tokenizer = load_tokenizer(config.tokenizer_dir)
    report: dict = {"concurrency": {}, "max_tokens": max_tokens}
    texts_by_level = {level: _questions(waves * level) for level in levels}

    http, grpc, metrics = free_ports(3)
    with TritonServer(repository, http_port=http, grpc_port=grpc, metrics_port=metrics) as server:
        asyncio.run(_through_ensemble(server.grpc_url, _questions(2), 2, 4))  # warm-up
        ensemble = {level: asyncio.run(_through_ensemble(server.grpc_url, texts_by_level[level], level, max_tokens))
                    for level in levels}
        openai = openai_tokens_per_s(server, texts_by_level, max_tokens)

    # the server is stopped: the in-process engine gets the machine to itself, as the server had
    engine = ReferenceEngine.from_config(config)
    try:
        asyncio.run(_in_process(engine, [tokenizer.render_chat([{"role": "user", "content": "Hi"}])], 1, 4))
        for level in levels:
            prompts = [tokenizer.render_chat([{"role": "user", "content": t}]) for t in texts_by_level[level]]
            direct = asyncio.run(_in_process(engine, prompts, level, max_tokens))
            report["concurrency"][str(level)] = {
                "requests": len(prompts),
                "ensemble_tokens_per_s": round(ensemble[level], 2),
                "direct_tokens_per_s": round(direct, 2),
                "openai_tokens_per_s": round(openai[level], 2),
                "openai_over_direct": round(openai[level] / direct, 3),
                "ensemble_over_direct": round(ensemble[level] / direct, 3),
            }
    finally:
        engine.shutdown()
    return report


def run(args) -> int:
    report = bench(args.model_repository, args.concurrency, args.max_tokens, args.waves)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for level, row in report["concurrency"].items():
            print(f"concurrency {level:>3}: ensemble {row['ensemble_tokens_per_s']:8.1f} tok/s   "
                  f"openai {row['openai_tokens_per_s']:8.1f} tok/s   "
                  f"in-process {row['direct_tokens_per_s']:8.1f} tok/s   ratio {row['ensemble_over_direct']}")
    return 0
