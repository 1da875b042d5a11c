"""Answers written by the target itself: greedy, through its chat template, on the reference engine.

Greedy answers are exactly what the served target emits at temperature 0, so they are
what the head must predict. Drafting is off; requests run batched (in-flight batching).
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np

from python_backend.protocol import SamplingParams
from python_backend.reference.engine import ReferenceEngine


@dataclass
class Conversation:
    prompt_ids: list[int]        # chat-template rendering, generation prompt included
    answer_ids: list[int]        # greedy answer; ends with eos when the target stopped by itself


def generate_answers(target, tokenizer, prompts: list[str], max_new_tokens: int, concurrency: int,
                     log=print) -> list[Conversation]:
    engine = ReferenceEngine(target, None, draft_len=0, max_batch_size=concurrency,
                             max_seq_len=4096, eos_token_id=tokenizer.eos_token_id)
    rendered = [tokenizer.render_chat([{"role": "user", "content": p}]) for p in prompts]
    params = SamplingParams(max_tokens=max_new_tokens, temperature=0.0)

    async def run_all() -> list[Conversation]:
        semaphore = asyncio.Semaphore(concurrency)
        results: list[Conversation | None] = [None] * len(prompts)
        start, done = time.perf_counter(), 0

        async def one(index: int) -> None:
            nonlocal done
            answer, stopped = [], False
            async with semaphore:
                async for step in engine.generate_async(rendered[index], params):
                    answer.extend(step.token_ids_diff)
                    stopped = step.finish_reason == "stop"
            # the engine does not emit the eos it stopped on; the head must learn to predict it
            results[index] = Conversation(rendered[index], answer + ([tokenizer.eos_token_id] if stopped else []))
            done += 1
            if done % 50 == 0 or done == len(prompts):
                tokens = sum(len(r.answer_ids) for r in results if r)
                log(f"  answers {done}/{len(prompts)}: {tokens} tokens, "
                    f"{tokens / (time.perf_counter() - start):.0f} tok/s")

        await asyncio.gather(*(one(i) for i in range(len(prompts))))
        return results

    try:
        return asyncio.run(run_all())
    finally:
        engine.shutdown()


def save_conversations(path, conversations: list[Conversation]) -> None:
    np.savez(path,
             prompt_ids=np.concatenate([c.prompt_ids for c in conversations]).astype(np.int32),
             prompt_lengths=np.array([len(c.prompt_ids) for c in conversations], np.int64),
             answer_ids=np.concatenate([c.answer_ids for c in conversations]).astype(np.int32),
             answer_lengths=np.array([len(c.answer_ids) for c in conversations], np.int64))


def load_conversations(path) -> list[Conversation]:
    data = np.load(path)
    prompts = np.split(data["prompt_ids"], np.cumsum(data["prompt_lengths"])[:-1])
    answers = np.split(data["answer_ids"], np.cumsum(data["answer_lengths"])[:-1])
    return [Conversation(p.tolist(), a.tolist()) for p, a in zip(prompts, answers)]
