"""bench-serving's OpenAI column: the same requests as the ensemble column, streamed through the
OpenAI-compatible server (its own process) with the official `openai` client; with the server
process's CPU time per streamed chunk, the cost this layer adds per response."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from triton_eagle.client import request_fields
from triton_eagle.openai_api.process import OpenAIServer
from triton_eagle.openai_api.schema import chat_body
from triton_eagle.process_cpu import cpu_seconds
from triton_eagle.tritonserver import free_port


@dataclass
class Streamed:
    tokens: int = 0
    chunks: int = 0        # SSE chunks received, the role and usage chunks included
    elapsed_s: float = 0.0


async def _through_openai(base_url: str, texts: list[str], concurrency: int, max_tokens: int) -> Streamed:
    import openai

    queue: asyncio.Queue[str] = asyncio.Queue()
    for text in texts:
        queue.put_nowait(text)
    streamed = Streamed()

    async def worker(client):
        while not queue.empty():
            body = chat_body(request_fields(queue.get_nowait(), max_tokens=max_tokens, min_tokens=max_tokens),
                             "ensemble")
            # min_tokens is an extension field: the client sends extras as extra_body
            stream = await client.chat.completions.create(
                model=body["model"], messages=body["messages"], max_tokens=body["max_tokens"], stream=True,
                stream_options={"include_usage": True}, extra_body={"min_tokens": body["min_tokens"]})
            async for chunk in stream:
                streamed.chunks += 1
                if chunk.usage is not None:
                    streamed.tokens += chunk.usage.completion_tokens

    # one client (one connection pool, 1000 connections by default) for all workers
    async with openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=600) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        streamed.elapsed_s = time.perf_counter() - started
    return streamed


def openai_tokens_per_s(server, texts_by_level: dict[int, list[str]], max_tokens: int) -> dict[int, dict]:
    """Per concurrency level through an OpenAI server in front of `server` (a running
    TritonServer), after one warm-up request: {"tokens_per_s", "api_cpu_us_per_chunk"}."""
    with OpenAIServer(server.grpc_url, free_port()) as api:
        asyncio.run(_through_openai(api.base_url, texts_by_level[min(texts_by_level)][:2], 2, 4))
        figures = {}
        for level, texts in texts_by_level.items():
            cpu_before = cpu_seconds(api.process.pid)
            streamed = asyncio.run(_through_openai(api.base_url, texts, level, max_tokens))
            api_cpu_s = cpu_seconds(api.process.pid) - cpu_before
            figures[level] = {"tokens_per_s": streamed.tokens / streamed.elapsed_s,
                              "api_cpu_us_per_chunk": round(1e6 * api_cpu_s / max(streamed.chunks, 1), 1)}
        return figures
