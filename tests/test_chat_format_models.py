"""preprocessing and postprocessing with the Harmony and Qwen3 formats, without Triton:
reasoning effort per request, and answer/reasoning outputs whose streamed deltas equal the
non-streaming response."""
from __future__ import annotations

import datetime
import json

import numpy as np
import pytest

from ensemble.chat import InputError
from ensemble.postprocessing_model import OutputParsers, postprocess
from ensemble.preprocessing_model import preprocess
from ensemble.tokenizer import load_tokenizer
from python_backend.prompt_limits import PromptLimits

CHANNEL, MESSAGE, END, START, RETURN = 200005, 200008, 200007, 200006, 200002


@pytest.fixture(scope="module")
def harmony():
    tokenizer = load_tokenizer("/unused", "harmony", reasoning_effort="low")
    tokenizer._today = lambda: datetime.date(2025, 8, 5)
    return tokenizer


@pytest.fixture(scope="module")
def qwen3():
    return load_tokenizer("/unused", "qwen3")


def text(value: str) -> np.ndarray:
    return np.array([[value.encode()]], dtype=object)


def hi() -> np.ndarray:
    return text(json.dumps([{"role": "user", "content": "Hi"}]))


LIMITS = PromptLimits(max_seq_len=8192, max_num_tokens=8192)


def test_reasoning_effort_input_reaches_the_harmony_system_message(harmony):
    default = preprocess({"MESSAGES": hi()}, harmony, LIMITS)
    high = preprocess({"MESSAGES": hi(), "REASONING_EFFORT": text("HIGH")}, harmony, LIMITS)
    assert "Reasoning: low" in harmony.decode(default.input_ids)     # the engine config's default
    assert "Reasoning: high" in harmony.decode(high.input_ids)
    assert default.end_id == harmony.eos_token_id == RETURN
    with pytest.raises(InputError, match=r"^reasoning_effort: must be one of low, medium, high"):
        preprocess({"MESSAGES": hi(), "REASONING_EFFORT": text("max")}, harmony, LIMITS)


def test_reasoning_effort_is_refused_where_the_format_has_none(qwen3):
    assert preprocess({"MESSAGES": hi(), "REASONING_EFFORT": text("")}, qwen3, LIMITS).input_ids
    with pytest.raises(InputError, match=r"^reasoning_effort: the qwen3 chat format"):
        preprocess({"MESSAGES": hi(), "REASONING_EFFORT": text("low")}, qwen3, LIMITS)


def response(tokens, finish_reason="", request_uuid="r1", stop_strings=(), context=()):
    """As the engine sends it; for formats with channels `context` is every token before `tokens`."""
    return {
        "TOKENS_BATCH": np.array(list(tokens), dtype=np.int32).reshape(1, 1, -1),
        "SEQUENCE_LENGTH": np.array([[len(tokens)]], dtype=np.int32),
        "CONTEXT_IDS": np.array(list(context), dtype=np.int32).reshape(1, -1),
        "REQUEST_UUID": np.array([[request_uuid.encode()]], dtype=object),
        "FINISH_REASON": np.array([[finish_reason.encode()]], dtype=object),
        "STOP_STRINGS": np.array([[s.encode() for s in stop_strings]], dtype=object).reshape(1, -1),
    }


def outputs_text(outputs, name):
    return outputs[name][0][0].decode()


def stream(tokenizer, ids, step, parsers, request_uuid="r1", stop_strings=()):
    answer, reasoning = [], []
    for start in range(0, len(ids), step):
        final = "stop" if start + step >= len(ids) else ""
        out = postprocess(response(ids[start:start + step], final, request_uuid, stop_strings, ids[:start]),
                          tokenizer, parsers=parsers)
        answer.append(outputs_text(out, "OUTPUT"))
        reasoning.append(outputs_text(out, "OUT_REASONING"))
    return "".join(answer), "".join(reasoning)


def harmony_completion(harmony, analysis, final):
    return ([CHANNEL] + harmony.encode_plain("analysis") + [MESSAGE] + harmony.encode_plain(analysis) + [END, START]
            + harmony.encode_plain("assistant") + [CHANNEL] + harmony.encode_plain("final") + [MESSAGE]
            + harmony.encode_plain(final) + [RETURN])


@pytest.mark.parametrize("step", [1, 3, 4, 7])
def test_harmony_stream_equals_non_stream_and_the_parser_is_released(harmony, step):
    ids = harmony_completion(harmony, "Ils demandent la capitale. 🤔", "Paris — 巴黎.")
    parsers = OutputParsers(harmony)
    streamed = stream(harmony, ids, step, parsers)
    assert len(parsers) == 0
    whole = postprocess(response(ids, "stop"), harmony, parsers=OutputParsers(harmony))
    assert streamed == (outputs_text(whole, "OUTPUT"), outputs_text(whole, "OUT_REASONING"))
    assert streamed == ("Paris — 巴黎.", "Ils demandent la capitale. 🤔")


def test_interleaved_streams_keep_their_own_parsers(qwen3):
    first = qwen3.encode_plain("think A") + [151668] + qwen3.encode_plain("answer A") + [151645]
    second = qwen3.encode_plain("think B") + [151668] + qwen3.encode_plain("answer B") + [151645]
    parsers = OutputParsers(qwen3)
    texts = {"a": ["", ""], "b": ["", ""]}
    for index in range(max(len(first), len(second))):
        for uuid, ids in (("a", first), ("b", second)):
            if index < len(ids):
                final = "stop" if index == len(ids) - 1 else ""
                out = postprocess(response([ids[index]], final, uuid, context=ids[:index]), qwen3, parsers=parsers)
                texts[uuid][0] += outputs_text(out, "OUTPUT")
                texts[uuid][1] += outputs_text(out, "OUT_REASONING")
    assert texts == {"a": ["answer A", "think A"], "b": ["answer B", "think B"]}
    assert len(parsers) == 0


def test_qwen3_stop_string_in_the_answer(qwen3):
    ids = qwen3.encode_plain("plan") + [151668] + qwen3.encode_plain("\n\nOne, two, three")
    assert stream(qwen3, ids, 2, OutputParsers(qwen3), stop_strings=["two"]) == ("One, ", "plan")


def test_cancelled_stream_releases_its_parser(qwen3):
    parsers = OutputParsers(qwen3)
    postprocess(response(qwen3.encode_plain("think"), "", "c1"), qwen3, parsers=parsers)
    assert len(parsers) == 1
    out = postprocess(response([], "cancelled", "c1"), qwen3, cancelled=True, parsers=parsers)
    assert outputs_text(out, "OUTPUT") == outputs_text(out, "OUT_REASONING") == ""
    assert len(parsers) == 0


def test_chatml_answers_an_empty_reasoning(smollm2_dir):
    tokenizer = load_tokenizer(smollm2_dir)
    out = postprocess(response(tokenizer.encode_plain("Hello there"), "length"), tokenizer,
                      parsers=OutputParsers(tokenizer))
    assert (outputs_text(out, "OUTPUT"), outputs_text(out, "OUT_REASONING")) == ("Hello there", "")
