"""Reasoning through the OpenAI API: Harmony's analysis channel and Qwen3's think block come
back as `reasoning_content` (whole and streamed), the answer as `content`, with the presets'
repositories served by a real tritonserver over the TensorRT-LLM test double."""
from __future__ import annotations

import openai
import pytest

from test_trtllm_triton import ANALYSIS, FINAL
from test_trtllm_triton import deployment, harmony, qwen3_deployment  # noqa: F401  (fixtures)
from triton_eagle.openai_api.process import OpenAIServer
from triton_eagle.tritonserver import free_port

pytestmark = pytest.mark.triton

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def whole_and_streamed(triton_server, **extra):
    """((content, reasoning) of one answer, the same streamed), through a fresh OpenAI server."""
    with OpenAIServer(triton_server.grpc_url, free_port()) as api, \
            openai.OpenAI(base_url=api.base_url, api_key="unused", max_retries=0) as client:
        whole = client.chat.completions.create(model="ensemble", messages=QUESTION, max_tokens=256, **extra)
        message = whole.choices[0].message
        content, reasoning = [], []
        for chunk in client.chat.completions.create(model="ensemble", messages=QUESTION, max_tokens=256,
                                                    stream=True, **extra):
            if chunk.choices:
                content.append(chunk.choices[0].delta.content or "")
                reasoning.append(getattr(chunk.choices[0].delta, "reasoning_content", None) or "")
        return (message.content, getattr(message, "reasoning_content", None)), ("".join(content), "".join(reasoning))


def test_harmony_analysis_channel_is_reasoning_content(deployment):  # noqa: F811
    server, _ = deployment
    whole, streamed = whole_and_streamed(server, reasoning_effort="high")
    assert whole == streamed == (FINAL, ANALYSIS)


def test_qwen3_think_block_is_reasoning_content(qwen3_deployment):  # noqa: F811
    whole, streamed = whole_and_streamed(qwen3_deployment)
    assert whole == streamed == ("Paris — 巴黎.", "Paris has been the capital since 987.")
