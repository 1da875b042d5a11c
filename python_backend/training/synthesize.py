"""Answers written by the target itself: greedy, through its chat template.

Greedy answers are exactly what the served target emits at temperature 0, so they are
what the head must predict. `generate_answers` runs them on the reference engine (drafting
off, in-flight batching); `generate_answers_with_features` runs the same greedy decoding
as its own in-flight batching loop over `target.forward` and keeps the hidden states at the
captured layers that decoding computes anyway, which saves a second forward pass over every
conversation (the most expensive part of the data after the answers themselves).
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
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


def generate_answers_with_features(target, tokenizer, prompts: list[str], max_new_tokens: int, concurrency: int,
                                   capture_layers: list[int], log=print) -> tuple[list[Conversation], np.ndarray]:
    """Greedy answers and the captured hidden states of every prompt + answer position.

    Returns (conversations, features (total tokens, len(capture_layers) * hidden)), the
    conversations concatenated in order, like `record_hidden_states`. Row t of a conversation
    is the state after reading token t; the last token of each conversation is never read (it
    is not fed back), so its row is zeros - no training target reads it (row t predicts
    t + 2 and later). Up to `concurrency` sequences decode together; a finished one's slot
    is refilled by the next prompt, prefilled in the same forward as the others' decodes.
    """
    eos = tokenizer.eos_token_id
    rendered = [tokenizer.render_chat([{"role": "user", "content": p}]) for p in prompts]
    width = len(capture_layers) * target.config.hidden_size
    waiting = deque(range(len(prompts)))
    active: dict[int, dict] = {}
    answers: list[list[int] | None] = [None] * len(prompts)
    chunks: list[list[np.ndarray] | None] = [None] * len(prompts)
    start, done, tokens = time.perf_counter(), 0, 0
    while waiting or active:
        joining = []
        while waiting and len(active) + len(joining) < concurrency:
            joining.append(waiting.popleft())
        order = list(active) + joining
        for index in joining:
            # a private cache per sequence (attention per sequence): the plain, well-tested path
            active[index] = {"cache": target.new_cache(), "next": rendered[index]}
            answers[index], chunks[index] = [], []
        out = target.forward([np.asarray(active[i]["next"], dtype=np.int64) for i in order],
                             [active[i]["cache"] for i in order], [1] * len(order), capture_layers)
        for row, index in enumerate(order):
            chunks[index].append(np.asarray(out.captured[row], dtype=np.float32))
            token = int(np.argmax(out.logits[row][-1]))
            answers[index].append(token)
            if token == eos or len(answers[index]) == max_new_tokens:
                # the engine stops here too: on eos (kept: the head must learn to predict it) or
                # after max_new_tokens answer tokens
                chunks[index].append(np.zeros((1, width), dtype=np.float32))   # the unread last token
                del active[index]
                done += 1
                tokens += len(answers[index])
                if done % 100 == 0 or done == len(prompts):
                    log(f"  answers {done}/{len(prompts)}: {tokens} tokens, "
                        f"{tokens / (time.perf_counter() - start):.0f} tok/s")
            else:
                active[index]["next"] = [token]
    conversations = [Conversation(list(rendered[i]), answers[i]) for i in range(len(prompts))]
    features = np.concatenate([np.concatenate(c) for c in chunks]) if chunks else np.zeros((0, width), np.float32)
    return conversations, features


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
