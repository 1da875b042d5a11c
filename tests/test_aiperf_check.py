"""The aiperf cross-check harness (loadtest/aiperf_check.py): both tools are given the same
requests. The run itself needs aiperf in .venv-aiperf (`make aiperf`, a heavy install CI does not
make), so the end-to-end test is opt-in: it runs only where that venv exists."""
from __future__ import annotations

import json
from pathlib import Path

import jinja2
import pytest

from loadtest import aiperf_check
from loadtest.workloads import load_workload
from triton_eagle.tritonserver import REPO_ROOT

AIPERF = REPO_ROOT / ".venv-aiperf" / "bin" / "aiperf"


def aiperf_payload(text: str, max_tokens: int) -> dict:
    """What aiperf 0.13's template endpoint sends (aiperf/endpoints/template_endpoint.py: the
    template rendered with autoescape on, parsed as JSON, then the extra inputs merged in)."""
    template = jinja2.Environment(autoescape=True).from_string(aiperf_check.GENERATE_STREAM_TEMPLATE.read_text())
    return {**json.loads(template.render(text=text)), "max_tokens": max_tokens}


def test_aiperf_and_locust_send_generate_stream_the_same_request(tmp_path):
    files = aiperf_check.write_prompts(tmp_path, 8)
    texts = [json.loads(line)["text"] for line in files["text"].read_text().splitlines()]
    locust_prompts = load_workload(str(files["messages"])).prompts
    assert len(texts) == len(locust_prompts) == 8 and len(set(texts)) == 8
    for text, prompt in zip(texts, locust_prompts):
        locust = prompt.fields(64)
        sent = aiperf_payload(text, 64)
        # the ensemble's `messages` input is a JSON string: compare what it decodes to
        assert json.loads(sent.pop("messages")) == json.loads(locust.pop("messages")) == [
            {"role": "user", "content": text}]
        assert sent == locust == {"stream": True, "max_tokens": 64}


def test_both_endpoints_give_each_tool_its_endpoint():
    openai = aiperf_check.Target("openai", "http://127.0.0.1:9000", 9000)
    triton = aiperf_check.Target("generate_stream", "http://127.0.0.1:8000", 8000)
    files = {"text": Path("t.jsonl"), "messages": Path("m.jsonl")}
    assert openai.aiperf_arguments(32)[:2] == ["--endpoint-type", "chat"]
    assert "/v2/models/ensemble/generate_stream" in triton.aiperf_arguments(32)
    assert "response_field:text_output" in triton.aiperf_arguments(32)
    assert openai.locust_arguments(files)[:2] == ["--protocol", "openai"]
    assert triton.locust_arguments(files)[:2] == ["--protocol", "http"]
    assert triton.locust_arguments(files)[-1] == "m.jsonl"


def test_ratios_pair_the_two_tools_of_each_round():
    runs = [("aiperf #1", {"output_tokens_per_s": 9.0, "ttft_p50_s": 0.6}),
            ("locust #1", {"output_tokens_per_s": 10.0, "ttft_p50_s": 0.5}),
            ("locust #2", {"output_tokens_per_s": 8.0, "ttft_p50_s": 0.4}),
            ("aiperf #2", {"output_tokens_per_s": 8.0, "ttft_p50_s": 0.5})]
    assert aiperf_check.tool_ratios(runs) == {"round #1": {"output_tokens_per_s": 0.9, "ttft_p50_s": 1.2},
                                              "round #2": {"output_tokens_per_s": 1.0, "ttft_p50_s": 1.25}}


@pytest.mark.triton
@pytest.mark.skipif(not AIPERF.is_file(), reason="opt-in: needs aiperf in .venv-aiperf (make aiperf)")
def test_each_tool_counts_the_tokens_the_server_counted(tmp_path):
    assert aiperf_check.main(["--endpoint", "generate_stream", "openai", "--requests", "4", "--users", "2",
                              "--max-tokens", "8", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "crosscheck.json").read_text())
    for endpoint in ("generate_stream", "openai"):
        for name, figures in results[endpoint]["runs"].items():
            assert figures["failed"] == 0 and figures["requests"] == 4, (endpoint, name)
            assert abs(figures["tool_over_server_tokens"] - 1) <= 0.02, (endpoint, name)
