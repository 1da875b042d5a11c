"""postprocessing without Triton: a text delta per engine response, stats passed
through, and never an error (an error after the decoupled model leaks the request)."""
from __future__ import annotations

import numpy as np
import pytest

from ensemble.detokenizer import context_window
from ensemble.postprocessing_model import OUTPUTS, OutputParsers, postprocess, read_step
from ensemble.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2_dir):
    """The real SmolLM2 tokenizer (conftest's `smollm2_dir` converts the packaged checkpoint if missing)."""
    return load_tokenizer(smollm2_dir)


def engine_response(tokens, context=(), finish_reason="", stop_strings=(), request_uuid="abc", **stats):
    """Arrays shaped as tensorrt_llm sends them (batch dim 1, beam dim 1)."""
    arrays = {
        "TOKENS_BATCH": np.array(list(tokens), dtype=np.int32).reshape(1, 1, -1),
        "SEQUENCE_LENGTH": np.array([[len(tokens)]], dtype=np.int32),
        "CONTEXT_IDS": np.array(list(context), dtype=np.int32).reshape(1, -1),
        "REQUEST_UUID": np.array([[request_uuid.encode()]], dtype=object),
        "FINISH_REASON": np.array([[finish_reason.encode()]], dtype=object),
        "STOP_STRINGS": np.array([[s.encode() for s in stop_strings]], dtype=object).reshape(1, -1),
    }
    for name, value in stats.items():
        dtype = np.float32 if name.startswith("ACCEPTANCE") else np.int32
        arrays[name] = np.array([[value]], dtype=dtype)
    return arrays


def text_of(outputs) -> str:
    return outputs["OUTPUT"][0][0].decode()


def test_streamed_responses_concatenate_to_the_text(smollm2_tokenizer):
    sentence = "Café 🙂 — 你好!  Done."
    ids = smollm2_tokenizer.encode_plain(sentence)
    window = context_window([])
    pieces = []
    for start in range(0, len(ids), 3):
        step = ids[start:start + 3]
        final = "length" if start + 3 >= len(ids) else ""
        outputs = postprocess(engine_response(step, ids[max(0, start - window):start], final), smollm2_tokenizer)
        pieces.append(text_of(outputs))
    assert "".join(pieces) == sentence


def test_stop_string_prefix_is_held_back_until_final(smollm2_tokenizer):
    ids = smollm2_tokenizer.encode_plain("Hello EN")
    held = postprocess(engine_response(ids, stop_strings=["END"]), smollm2_tokenizer)
    assert text_of(held) == "Hello "
    flushed = postprocess(engine_response(ids, finish_reason="length", stop_strings=["END"]), smollm2_tokenizer)
    assert text_of(flushed) == "Hello EN"


def test_stats_and_finish_reason_pass_through(smollm2_tokenizer):
    outputs = postprocess(engine_response([19556], finish_reason="stop", NUM_INPUT_TOKENS=12, NUM_OUTPUT_TOKENS=5,
                                          TOTAL_DRAFT_TOKENS=9, TOTAL_ACCEPTED_DRAFT_TOKENS=6,
                                          ACCEPTANCE_LENGTH=2.5, ACCEPTANCE_RATE=0.6667), smollm2_tokenizer)
    assert set(outputs) == set(OUTPUTS)
    assert outputs["OUT_FINISH_REASON"].tolist() == [[b"stop"]]
    assert outputs["OUT_NUM_INPUT_TOKENS"].tolist() == [[12]]
    assert outputs["OUT_NUM_OUTPUT_TOKENS"].tolist() == [[5]]
    assert outputs["OUT_TOTAL_DRAFT_TOKENS"].tolist() == [[9]]
    assert outputs["OUT_TOTAL_ACCEPTED_DRAFT_TOKENS"].tolist() == [[6]]
    assert outputs["OUT_ACCEPTANCE_LENGTH"].dtype == np.float32
    assert outputs["OUT_ACCEPTANCE_RATE"][0][0] == pytest.approx(0.6667)
    for name, (_, dims) in OUTPUTS.items():
        assert outputs[name].ndim == 1 + len(dims), name


def test_sequence_length_bounds_the_tokens(smollm2_tokenizer):
    arrays = engine_response(smollm2_tokenizer.encode_plain("one two three"), finish_reason="length")
    arrays["SEQUENCE_LENGTH"] = np.array([[2]], dtype=np.int32)
    assert text_of(postprocess(arrays, smollm2_tokenizer)) == "one two"


def test_cancelled_requests_get_an_empty_text(smollm2_tokenizer):
    outputs = postprocess(engine_response(smollm2_tokenizer.encode_plain("hello")), smollm2_tokenizer,
                          cancelled=True)
    assert text_of(outputs) == ""


@pytest.mark.parametrize("arrays", [
    {},
    {"TOKENS_BATCH": np.array([[[b"not", b"ids"]]], dtype=object)},
    {"TOKENS_BATCH": np.array([[[10**9]]], dtype=np.int64), "FINISH_REASON": np.array([[b"length"]], dtype=object)},
    {"TOKENS_BATCH": np.zeros((0, 1, 3), dtype=np.int32), "CONTEXT_IDS": np.zeros((1, 0), dtype=np.int32)},
    {"NUM_OUTPUT_TOKENS": np.array([[b"seven"]], dtype=object), "ACCEPTANCE_RATE": np.zeros((1, 0), np.float32)},
])
def test_malformed_responses_never_raise(smollm2_tokenizer, arrays):
    errors = []
    outputs = postprocess(arrays, smollm2_tokenizer, log_error=errors.append)
    assert set(outputs) == set(OUTPUTS)
    assert outputs["OUTPUT"].shape == (1, 1)
    assert outputs["OUT_NUM_OUTPUT_TOKENS"].tolist() == [[0]]


def test_read_step_takes_beam_zero_and_the_final_flag():
    step = read_step(engine_response([5, 6, 7], context=[1, 2], finish_reason="stop", stop_strings=["x", ""]))
    assert (step.new_ids, step.context_ids, step.final, step.stop_strings) == ([5, 6, 7], [1, 2], True, ("x",))
    assert read_step(engine_response([5])).final is False


@pytest.mark.parametrize("chat_format", ["harmony", "qwen3"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_responses_spread_over_instances_give_the_single_instance_text(chat_format, seed):
    """Several postprocessing instances each see some of a stream's responses (in order, as
    preserve_ordering delivers them): every delta equals what one instance answers."""
    import random

    tokenizer = load_tokenizer("/unused", chat_format)
    if chat_format == "harmony":
        special = tokenizer._special_id
        ids = ([special("<|channel|>")] + tokenizer.encode_plain("analysis") + [special("<|message|>")]
               + tokenizer.encode_plain("On pèse 🤔 les options.") + [special("<|end|>"), special("<|start|>")]
               + tokenizer.encode_plain("assistant") + [special("<|channel|>")] + tokenizer.encode_plain("final")
               + [special("<|message|>")] + tokenizer.encode_plain("Réponse: 巴黎, STOP here.") + [special("<|return|>")])
    else:
        ids = tokenizer.encode_plain("\nOn pèse 🤔 les options.\n") + [151668] \
            + tokenizer.encode_plain("\n\nRéponse: 巴黎, STOP here.") + [151645]
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(ids)), 9))
    steps = [ids[a:b] for a, b in zip([0] + cuts, cuts + [len(ids)])]

    def run(instances: list[OutputParsers], request_uuid: str) -> list[tuple[str, str]]:
        deltas, sent = [], 0
        for index, step in enumerate(steps):
            final = "stop" if index == len(steps) - 1 else ""
            arrays = engine_response(step, ids[:sent], final, stop_strings=["STOP"], request_uuid=request_uuid)
            outputs = postprocess(arrays, tokenizer, parsers=rng.choice(instances))
            deltas.append((text_of(outputs), outputs["OUT_REASONING"][0][0].decode()))
            sent += len(step)
        return deltas

    one = run([OutputParsers(tokenizer)], "one")
    spread = run([OutputParsers(tokenizer, capacity=1) for _ in range(3)], "spread")
    assert spread == one
    assert "".join(d[0] for d in one) == "Réponse: 巴黎, "
    assert "".join(d[1] for d in one).strip("\n") == "On pèse 🤔 les options."
