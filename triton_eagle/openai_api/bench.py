"""bench-serving's `openai_tokens_per_s`: the same requests as the ensemble column, streamed
through the OpenAI-compatible server (its own process) with the official `openai` client."""
from __future__ import annotations

import asyncio
import time

from triton_eagle.client import request_fields
from triton_eagle.openai_api.process import OpenAIServer
from triton_eagle.openai_api.schema import chat_body
from triton_eagle.tritonserver import free_port


async def _through_openai(base_url: str, texts: list[str], concurrency: int, max_tokens: int) -> float:
    import openai

    queue: asyncio.Queue[str] = asyncio.Queue()
    for text in texts:
        queue.put_nowait(text)
    tokens = 0

    async def worker(client):
        nonlocal tokens
        while not queue.empty():
            body = chat_body(request_fields(queue.get_nowait(), max_tokens=max_tokens, min_tokens=max_tokens),
                             "ensemble")
            # min_tokens is an extension field: the client sends extras as extra_body
            stream = await client.chat.completions.create(
                model=body["model"], messages=body["messages"], max_tokens=body["max_tokens"], stream=True,
                stream_options={"include_usage": True}, extra_body={"min_tokens": body["min_tokens"]})
            async for chunk in stream:
                if chunk.usage is not None:
                    tokens += chunk.usage.completion_tokens

    # one client (one connection pool, 1000 connections by default) for all workers
    async with openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=600) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return tokens / (time.perf_counter() - started)


def openai_tokens_per_s(server, texts_by_level: dict[int, list[str]], max_tokens: int) -> dict[int, float]:
    """Output tokens/s per concurrency level through an OpenAI server in front of `server`
    (a running TritonServer), after one warm-up request."""
    with OpenAIServer(server.grpc_url, free_port()) as api:
        asyncio.run(_through_openai(api.base_url, texts_by_level[min(texts_by_level)][:2], 2, 4))
        return {level: asyncio.run(_through_openai(api.base_url, texts, level, max_tokens))
                for level, texts in texts_by_level.items()}
