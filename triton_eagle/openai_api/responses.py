"""OpenAI's response shapes for chat and text completions, whole or as SSE chunks.

Reasoning goes in `reasoning_content` of the message or delta, as trtllm-serve names it
(ChatMessage / DeltaMessage in NVIDIA/TensorRT-LLM tensorrt_llm/serve/openai_protocol.py,
commit 0076e93) and vLLM does.

`usage` carries OpenAI's three counts (the ensemble's num_input_tokens / num_output_tokens)
plus `speculative_decoding`: draft tokens, accepted draft tokens and acceptance length.
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field

from triton_eagle.openai_api.ensemble import Step

DONE_EVENT = b"data: [DONE]\n\n"


def sse(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def usage(stats: dict[str, float]) -> dict:
    prompt = int(stats.get("num_input_tokens", 0))
    completion = int(stats.get("num_output_tokens", 0))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "speculative_decoding": {
                "draft_tokens": int(stats.get("total_draft_tokens", 0)),
                "accepted_draft_tokens": int(stats.get("total_accepted_draft_tokens", 0)),
                "acceptance_length": round(float(stats.get("acceptance_length", 0.0)), 4)}}


def finish_reason(ensemble_reason: str) -> str:
    """The ensemble says stop | length (cancelled never reaches a client that is still there)."""
    return "length" if ensemble_reason == "length" else "stop"


@dataclass
class Completion:
    """One request's answer as it builds up; `chat` picks the chat or the text-completion shape."""

    model: str
    chat: bool
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))
    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    finish_reason: str = ""
    stats: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        if not self.id:
            self.id = ("chatcmpl-" if self.chat else "cmpl-") + uuid.uuid4().hex

    def add(self, step: Step) -> None:
        self.text.append(step.text)
        self.reasoning.append(step.reasoning)
        self.stats.update(step.stats)
        if step.finish_reason:
            self.finish_reason = finish_reason(step.finish_reason)

    # -- whole ------------------------------------------------------------------------
    def body(self) -> dict:
        text, reasoning = "".join(self.text), "".join(self.reasoning)
        if self.chat:
            message = {"role": "assistant", "content": text}
            if reasoning:
                message["reasoning_content"] = reasoning
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": self.finish_reason}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": self.finish_reason}
        return {"id": self.id, "object": "chat.completion" if self.chat else "text_completion",
                "created": self.created, "model": self.model, "choices": [choice], "usage": usage(self.stats)}

    # -- streamed ---------------------------------------------------------------------
    def _chunk(self, choice: dict | None, with_usage: bool | None) -> dict:
        chunk = {"id": self.id, "object": "chat.completion.chunk" if self.chat else "text_completion",
                 "created": self.created, "model": self.model, "choices": [] if choice is None else [choice]}
        if with_usage is not None:   # include_usage: null on every chunk but the last (OpenAI's rule)
            chunk["usage"] = usage(self.stats) if with_usage else None
        return chunk

    def role_chunk(self, with_usage: bool | None) -> bytes | None:
        if not self.chat:
            return None
        choice = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
        return sse(self._chunk(choice, False if with_usage is not None else None))

    def delta_chunk(self, step: Step, with_usage: bool | None) -> bytes | None:
        """This step's text as a chunk; None when it carries no text (and usage is not streamed)."""
        if not step.text and not step.reasoning and not with_usage:
            return None
        if self.chat:
            delta = {}
            if step.reasoning:
                delta["reasoning_content"] = step.reasoning
            if step.text or not step.reasoning:
                delta["content"] = step.text
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
        else:
            choice = {"index": 0, "text": step.text, "logprobs": None, "finish_reason": None}
        return sse(self._chunk(choice, with_usage))

    def final_chunks(self, include_usage: bool, continuous_usage: bool) -> list[bytes]:
        with_usage = True if continuous_usage else (False if include_usage else None)
        if self.chat:
            choice = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": self.finish_reason}
        else:
            choice = {"index": 0, "text": "", "logprobs": None, "finish_reason": self.finish_reason}
        chunks = [sse(self._chunk(choice, with_usage))]
        if include_usage:
            chunks.append(sse(self._chunk(None, True)))
        return chunks + [DONE_EVENT]


def error_event(body: dict) -> list[bytes]:
    """A failure after the 200 was sent: the error as one event, then the end of the stream."""
    return [sse(body), DONE_EVENT]
