"""Send one prompt to a running server and stream the answer (gRPC), then print the stats."""
from __future__ import annotations

import argparse
import asyncio
import sys

from triton_eagle.client import request_fields, stream_generate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help="user message (sent as a one-message chat, rendered with the model's "
                                       "chat template; with --raw, sent as text_input: the raw prompt)")
    parser.add_argument("--raw", action="store_true",
                        help="send the prompt as text_input, tokenized as-is (no chat template)")
    parser.add_argument("--url", default="127.0.0.1:8001", help="gRPC address of tritonserver")
    parser.add_argument("--model", default="ensemble")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")


def generate_fields(args) -> dict:
    """Ensemble inputs: the prompt as a one-message chat, or with --raw as text_input."""
    prompt = {"text": args.prompt} if args.raw else {"messages": [{"role": "user", "content": args.prompt}]}
    return request_fields(**prompt, max_tokens=args.max_tokens, temperature=args.temperature,
                          top_p=args.top_p, seed=args.seed, stop_words=args.stop)


async def _generate(args) -> int:
    import tritonclient.grpc.aio as grpcclient

    fields = generate_fields(args)
    async with grpcclient.InferenceServerClient(args.url) as client:
        generation = await stream_generate(client, fields, model=args.model,
                                           on_delta=lambda d: print(d, end="", flush=True))
    print()
    if generation.error:
        print(f"error: {generation.error}", file=sys.stderr)
        return 1
    stats = generation.stats
    print(f"[finish_reason={generation.finish_reason} ttft={generation.ttft_s:.3f}s "
          f"latency={generation.latency_s:.3f}s output_tokens={stats.get('num_output_tokens')} "
          f"acceptance_length={stats.get('acceptance_length', 1.0):.2f} "
          f"accepted/drafted={stats.get('total_accepted_draft_tokens')}/{stats.get('total_draft_tokens')}]",
          file=sys.stderr)
    return 0


def run(args) -> int:
    return asyncio.run(_generate(args))
