"""Benchmark the serving layer: what reaches clients through Triton, and what it costs.

`--engine reference` (the CPU default): tokens/s through the ensemble (gRPC streaming) versus the same
engine in-process, same prompts and lengths, one run.

`--engine simulated --profile NAME`: a seed deployment's B200 pace, SIMULATED from published figures
(python_backend/simulated/), behind a real tritonserver. Per concurrency: the tokens/s the simulated
engine demands, what clients receive through each client path (ensemble; the tensorrt_llm model
direct), responses/s, TTFT and inter-response gaps, and CPU time per response in each model's process,
in tritonserver and in this client. A client path is one async function in CLIENT_PATHS; the
OpenAI-compatible server in front of the ensemble is measured beside them (openai_api/bench.py).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from python_backend.config import load_engine_config
from python_backend.protocol import SamplingParams
from triton_eagle.client import Generation, request_fields, stream_generate
from triton_eagle.process_cpu import server_processes, snapshot
from triton_eagle.openai_api.bench import openai_tokens_per_s
from triton_eagle.prompts import MTBENCH_CATEGORIES, mtbench_questions
from triton_eagle.tritonserver import TritonServer, free_ports

SIMULATED_LEVELS = [1, 8, 32, 64, 128]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", choices=["reference", "simulated"], default="reference")
    parser.add_argument("--profile", default="gpt-oss-120b-8xb200",
                        help="simulation profile (--engine simulated): python_backend/simulated/profiles/")
    parser.add_argument("--drafting", choices=["on", "off"], default="on", help="--engine simulated only")
    parser.add_argument("--model-repository", default="model_repository", help="--engine reference only")
    parser.add_argument("--concurrency", type=int, nargs="+", default=None,
                        help="default: 1 32 (reference), 1 8 32 64 128 (simulated)")
    parser.add_argument("--max-tokens", type=int, default=None,
                        help="output tokens per request (fixed: min_tokens = max_tokens); default 48 "
                             "(reference), 256 (simulated)")
    parser.add_argument("--waves", type=int, default=2, help="requests per level = waves x concurrency")
    parser.add_argument("--stream-interval-ms", type=float, default=None,
                        help="--engine simulated: override the repository's stream_interval_ms (0 = a "
                             "response per engine step)")
    parser.add_argument("--paths", nargs="+", default=None,
                        help="client paths (--engine simulated): ensemble direct in_model (default: all)")
    parser.add_argument("--postprocessing-instances", type=int, default=None,
                        help="--engine simulated: postprocessing instances, responses kept in order "
                             "(python_backend/simulated/repository.py set_postprocessing_instances)")
    parser.add_argument("--json", action="store_true")


def _questions(count: int) -> list[str]:
    questions = mtbench_questions()
    by_category = [[q.text for q in questions if q.category == c] for c in MTBENCH_CATEGORIES]
    interleaved = [text for group in zip(*by_category) for text in group]
    return [interleaved[i % len(interleaved)] for i in range(count)]


# -- client paths: each runs `work` with `concurrency` streams and returns what the clients saw ----
@dataclass
class Work:
    texts: list[str]                 # user messages (the ensemble renders them)
    prompts: list[list[int]]         # the same, rendered and tokenized (direct to tensorrt_llm)
    max_tokens: int


async def _run_streams(grpc_url: str, count: int, concurrency: int, one) -> tuple[list[Generation], float]:
    import tritonclient.grpc.aio as grpcclient

    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(count):
        queue.put_nowait(index)
    generations: list[Generation] = []

    async def worker():
        async with grpcclient.InferenceServerClient(grpc_url) as client:
            while not queue.empty():
                generations.append(await one(client, queue.get_nowait()))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    errors = [g.error for g in generations if g.error]
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, first: {errors[0]}")
    return generations, elapsed


async def ensemble_path(grpc_url: str, work: Work, concurrency: int):
    """gRPC streaming through the ensemble (what clients call)."""
    async def one(client, index):
        fields = request_fields(messages=[{"role": "user", "content": work.texts[index]}],
                                max_tokens=work.max_tokens, min_tokens=work.max_tokens)
        return await stream_generate(client, fields)
    return await _run_streams(grpc_url, len(work.texts), concurrency, one)


async def direct_path(grpc_url: str, work: Work, concurrency: int):
    """gRPC streaming straight to the decoupled tensorrt_llm model (token ids in and out)."""
    import tritonclient.grpc as grpcclient

    def inputs(prompt):
        arrays = {"input_ids": np.array([prompt], dtype=np.int32),
                  "request_output_len": np.array([[work.max_tokens]], dtype=np.int32),
                  "min_tokens": np.array([[work.max_tokens]], dtype=np.int32),
                  "streaming": np.array([[True]], dtype=bool)}
        tensors = []
        for name, array in arrays.items():
            tensor = grpcclient.InferInput(name, list(array.shape), "BOOL" if array.dtype == bool else "INT32")
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        return tensors

    async def one(client, index):
        return await stream_generate(client, inputs(work.prompts[index]), model="tensorrt_llm")
    return await _run_streams(grpc_url, len(work.prompts), concurrency, one)


async def in_model_path(grpc_url: str, work: Work, concurrency: int):
    """gRPC streaming of a chat straight to tensorrt_llm's text form: in-model detokenization
    (python_backend/text_form.py), the ensemble's inputs and outputs without its hops."""
    async def one(client, index):
        fields = request_fields(messages=[{"role": "user", "content": work.texts[index]}],
                                max_tokens=work.max_tokens, min_tokens=work.max_tokens)
        return await stream_generate(client, fields, model="tensorrt_llm")
    return await _run_streams(grpc_url, len(work.texts), concurrency, one)


CLIENT_PATHS = {"ensemble": ensemble_path, "direct": direct_path, "in_model": in_model_path}
# the single-threaded Python stages each path's responses cross
SERIAL_STAGES = {"ensemble": ("tensorrt_llm", "postprocessing"), "direct": ("tensorrt_llm",),
                 "in_model": ("tensorrt_llm",)}


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


def summarize(generations: list[Generation], elapsed_s: float, cpu_s: dict[str, float]) -> dict:
    """Client-side figures of one run, and CPU per response / per token of each process group."""
    tokens = sum(int(g.stats.get("num_output_tokens", 0)) for g in generations)
    responses = sum(len(g.arrival_s) for g in generations)
    gaps = [b - a for g in generations for a, b in zip(g.arrival_s, g.arrival_s[1:])]
    server_cpu_s = sum(seconds for name, seconds in cpu_s.items() if name not in ("client", "simulated_engine"))
    return {
        "requests": len(generations),
        "tokens_per_s": round(tokens / elapsed_s, 1),
        "responses_per_s": round(responses / elapsed_s, 1),
        "tokens_per_response": round(tokens / max(responses, 1), 2),
        "mean_request_s": round(statistics.mean(g.latency_s for g in generations), 3),
        "ttft_s": {"p50": round(_percentile([g.arrival_s[0] for g in generations], 50), 4),
                   "p99": round(_percentile([g.arrival_s[0] for g in generations], 99), 4)},
        "gap_s": {"p50": round(_percentile(gaps, 50), 4), "p99": round(_percentile(gaps, 99), 4)},
        "cpu_ms_per_response": {name: round(1000 * seconds / max(responses, 1), 3)
                                for name, seconds in sorted(cpu_s.items())},
        "server_cpu_ms_per_token": round(1000 * server_cpu_s / max(tokens, 1), 4),
    }


def serial_ceilings(row: dict, stages: tuple[str, ...], postprocessing_instances: int = 1) -> dict[str, float]:
    """tokens/s each single-threaded stage could carry at its measured CPU per response (several
    postprocessing instances: each is single-threaded and takes its share of the responses)."""
    per_response = row["cpu_ms_per_response"]
    threads = {"tensorrt_llm": 1, "postprocessing": postprocessing_instances}
    return {name: round(threads[name] * 1000 * row["tokens_per_response"] / per_response[name], 0)
            for name in stages if per_response.get(name)}


# -- the simulated engine behind a real tritonserver -------------------------------------------------
def bench_simulated(profile_name: str, levels: list[int], max_tokens: int, waves: int, drafting: bool,
                    paths: list[str], stream_interval_ms: float | None = None,
                    postprocessing_instances: int | None = None) -> dict:
    from ensemble.tokenizer import load_tokenizer
    from python_backend.simulated.profile import load_profile
    from python_backend.simulated.repository import write_simulated_repository

    profile = load_profile(profile_name)
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as folder:
        repository = write_simulated_repository(profile_name, Path(folder) / "repository", drafting,
                                                stream_interval_ms, postprocessing_instances)
        config = load_engine_config(repository / "tensorrt_llm" / "engine.yaml")
        tokenizer = load_tokenizer(config.tokenizer_dir, config.chat_format, config.reasoning_effort)
        report = {"profile": profile.name, "label": profile.label, "engine": "simulated",
                  "drafting": drafting, "max_tokens": max_tokens, "host_cpus": os.cpu_count(),
                  "stream_interval_ms": _stream_interval_ms(repository),
                  "postprocessing_instances": postprocessing_instances or 1,
                  "load_average_before": [round(x, 2) for x in os.getloadavg()], "concurrency": {}}
        http, grpc, metrics = free_ports(3)
        with TritonServer(repository, http_port=http, grpc_port=grpc, metrics_port=metrics) as server:
            processes = server_processes(server.process.pid)
            warm = Work(_questions(4), [], 8)
            asyncio.run(ensemble_path(server.grpc_url, warm, 2))
            for level in levels:
                texts = _questions(max(waves * level, 4))
                work = Work(texts, [tokenizer.render_chat([{"role": "user", "content": t}]) for t in texts],
                            max_tokens)
                row = {"demanded_tokens_per_s": round(profile.demanded_tokens_per_s(
                    level, config.max_batch_size, max_tokens, drafting), 1)}
                for path in paths:
                    before = snapshot(processes)
                    generations, elapsed = asyncio.run(CLIENT_PATHS[path](server.grpc_url, work, level))
                    after = snapshot(processes)
                    row[path] = summarize(generations, elapsed, {k: after[k] - before[k] for k in after})
                    row[path]["serial_stage_ceiling_tokens_per_s"] = serial_ceilings(
                        row[path], SERIAL_STAGES[path], postprocessing_instances or 1)
                if "ensemble" in row:
                    row["delivered_tokens_per_s"] = row["ensemble"]["tokens_per_s"]
                    row["responses_per_s"] = row["ensemble"]["responses_per_s"]
                if "direct" in row:
                    row["direct_tokens_per_s"] = row["direct"]["tokens_per_s"]
                if "in_model" in row:
                    row["in_model_tokens_per_s"] = row["in_model"]["tokens_per_s"]
                report["concurrency"][str(level)] = row
        return report


def _stream_interval_ms(repository: Path) -> float:
    from python_backend.coalescing import StreamInterval

    text = (repository / "tensorrt_llm" / "config.pbtxt").read_text()
    parameters = {key: {"string_value": value} for key, value in
                  re.findall(r'key: "(\w+)"\s*value: \{ string_value: "([^"]*)" \}', text)}
    return StreamInterval.from_parameters(parameters).interval_s * 1000


# -- the reference engine: ensemble vs in-process ------------------------------------------------
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
    from python_backend.reference.engine import ReferenceEngine

    config = load_engine_config(Path(repository) / "tensorrt_llm" / "engine.yaml")
    tokenizer = load_tokenizer(config.tokenizer_dir)
    report: dict = {"concurrency": {}, "max_tokens": max_tokens}
    texts_by_level = {level: _questions(waves * level) for level in levels}

    http, grpc, metrics = free_ports(3)
    with TritonServer(repository, http_port=http, grpc_port=grpc, metrics_port=metrics) as server:
        asyncio.run(ensemble_path(server.grpc_url, Work(_questions(2), [], 4), 2))  # warm-up
        ensemble = {}
        for level in levels:
            generations, elapsed = asyncio.run(
                ensemble_path(server.grpc_url, Work(texts_by_level[level], [], max_tokens), level))
            ensemble[level] = sum(int(g.stats.get("num_output_tokens", 0)) for g in generations) / elapsed
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
                "openai_tokens_per_s": round(openai[level]["tokens_per_s"], 2),
                "openai_over_direct": round(openai[level]["tokens_per_s"] / direct, 3),
                "openai_api_cpu_us_per_chunk": openai[level]["api_cpu_us_per_chunk"],
                "ensemble_over_direct": round(ensemble[level] / direct, 3),
            }
    finally:
        engine.shutdown()
    return report


def _print_simulated(report: dict) -> None:
    print(f"SIMULATED: {report['label']} (drafting {'on' if report['drafting'] else 'off'}, "
          f"{report['max_tokens']} tokens per request, stream_interval_ms {report['stream_interval_ms']:g})")
    print("conc  demanded  ensemble  direct  in_model  resp/s  tok/resp  ttft p50/p99 ms  "
          "cpu ms/resp (trtllm post triton client)")
    for level, row in report["concurrency"].items():
        ens = row.get("ensemble") or row.get("direct")
        cpu = ens["cpu_ms_per_response"]
        print(f"{level:>4}  {row['demanded_tokens_per_s']:8.0f}  {row.get('delivered_tokens_per_s', 0):8.0f}  "
              f"{row.get('direct_tokens_per_s', 0):6.0f}  {row.get('in_model_tokens_per_s', 0):8.0f}  "
              f"{ens['responses_per_s']:6.0f}  "
              f"{ens['tokens_per_response']:8.2f}  {1000 * ens['ttft_s']['p50']:6.1f}/{1000 * ens['ttft_s']['p99']:6.1f}  "
              f"{cpu.get('tensorrt_llm', 0):.3f} {cpu.get('postprocessing', 0):.3f} "
              f"{cpu.get('tritonserver', 0):.3f} {cpu.get('client', 0):.3f}")


def run(args) -> int:
    if args.engine == "simulated":
        paths = args.paths or list(CLIENT_PATHS)
        unknown = [p for p in paths if p not in CLIENT_PATHS]
        if unknown:
            raise SystemExit(f"--paths: unknown client path {unknown[0]!r} (one of {', '.join(CLIENT_PATHS)})")
        report = bench_simulated(args.profile, args.concurrency or SIMULATED_LEVELS, args.max_tokens or 256,
                                 args.waves, args.drafting == "on", paths, args.stream_interval_ms,
                                 args.postprocessing_instances)
        print(json.dumps(report, indent=2)) if args.json else _print_simulated(report)
        return 0
    report = bench(args.model_repository, args.concurrency or [1, 32], args.max_tokens or 48, args.waves)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for level, row in report["concurrency"].items():
            print(f"concurrency {level:>3}: ensemble {row['ensemble_tokens_per_s']:8.1f} tok/s   "
                  f"openai {row['openai_tokens_per_s']:8.1f} tok/s   "
                  f"in-process {row['direct_tokens_per_s']:8.1f} tok/s   ratio {row['ensemble_over_direct']}")
    return 0
