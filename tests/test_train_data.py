"""Training data for the EAGLE-3 head: the prompt sources, the answers-with-features loop, the
simulated decoding metric.

Prompts must be deterministic, distinct, drawn from every source, and share no phrase with
the MT-Bench questions the head is evaluated on. The answers-with-features loop must give
the engine's greedy answers and the hidden states a separate prefill pass records.
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from python_backend.training.prompts import (dummy_conversation_prompts, module_summaries, phrases,
                                             pydoc_passages, shares_phrase_with_mtbench, stdlib_summaries,
                                             training_prompts)
from python_backend.training.hf_target import usable_user_turn
from python_backend.training.ttt import simulate_decoding
from triton_eagle.prompts import mtbench_questions


@pytest.fixture(scope="module")
def prompts() -> list[str]:
    return training_prompts(1000, seed=0)


def test_prompts_are_deterministic_and_distinct(prompts):
    assert len(prompts) == 1000 and len(set(prompts)) == 1000
    assert training_prompts(1000, seed=0) == prompts
    assert training_prompts(1000, seed=1) != prompts
    assert training_prompts(30, seed=0) == prompts[:30]        # dummy-conversation turns come first


def test_every_source_is_used(prompts):
    turns = dummy_conversation_prompts()
    assert len(turns) > 50 and prompts[:len(turns)] == turns
    rest = "\n".join(prompts[len(turns):])
    assert sum(p in rest for p in pydoc_passages()) >= 20
    assert sum(f"`{name}`" in rest for name, _ in module_summaries()) >= 5
    assert sum(f"`{name}`" in rest for name, _ in stdlib_summaries()) >= 20
    for marker in ("Write a", "You are", "Solve", "years old and lives in", "Python", "Explain", "Discuss"):
        assert marker in rest, marker


def test_passages_are_prose():
    passages = pydoc_passages()
    assert len(passages) > 200 and len(set(passages)) == len(passages)
    assert all(200 <= len(p) <= 700 and "::" not in p for p in passages)


def test_no_prompt_shares_a_phrase_with_mtbench(prompts):
    # 6 words in a row in common with any MT-Bench first turn would mean copied text
    assert len(set().union(*(phrases(q.text) for q in mtbench_questions()))) > 1000
    copied = shares_phrase_with_mtbench()
    overlapping = [p for p in prompts if copied(p)]
    assert not overlapping, overlapping[:3]


def test_the_mtbench_check_catches_copied_and_reworded_text():
    copied = shares_phrase_with_mtbench()
    question = mtbench_questions()[0].text
    assert copied(question) and copied(question.upper())
    assert copied("Please help: " + " ".join(question.split()[:8]) + " thanks")
    assert not copied("Write a short poem about the ocean at night.")


def test_simulated_decoding_walks_like_the_engine():
    # answer starts at 4, length 12: pending x_4 after prefill, first draft from row 3 for x_5
    length, start = 12, 4
    all_right = [np.ones(length, bool)] * 3
    assert simulate_decoding(all_right, start, length) == (6, 2)     # x_5..x_7 (+x_8), x_9..x_11 (+one past the end)
    all_wrong = [np.zeros(length, bool)] * 3
    assert simulate_decoding(all_wrong, start, length) == (0, 7)     # one token per step: x_5..x_11
    first_only = [np.ones(length, bool), np.zeros(length, bool), np.ones(length, bool)]
    assert simulate_decoding(first_only, start, length) == (4, 4)    # steps at x_5, x_7, x_9, x_11


def test_answers_with_features_match_the_engine_and_a_prefill(smollm2_dir):
    from ensemble.tokenizer import load_tokenizer
    from python_backend.reference.llama import LlamaModel
    from python_backend.training.hidden_states import record_hidden_states
    from python_backend.training.synthesize import generate_answers, generate_answers_with_features

    target = LlamaModel.from_pretrained(smollm2_dir)
    tokenizer = load_tokenizer(str(smollm2_dir))
    texts = ["Hi!", "Write a haiku about the sea.", "What is 2+2?", "Name three colors.", "Say only: yes"]
    layers = [1, 14, 26]
    expected = generate_answers(target, tokenizer, texts, 20, 3, log=lambda *_: None)
    got, features = generate_answers_with_features(target, tokenizer, texts, 20, 3, layers, log=lambda *_: None)
    assert [c.answer_ids for c in got] == [c.answer_ids for c in expected]
    assert [c.prompt_ids for c in got] == [c.prompt_ids for c in expected]
    assert any(c.answer_ids[-1] == tokenizer.eos_token_id for c in got)            # stopped ones keep eos
    assert any(len(c.answer_ids) == 20 for c in got)                               # and the cap holds
    reference = record_hidden_states(target, got, layers, log=lambda *_: None)
    assert features.shape == reference.shape
    ends = np.cumsum([len(c.prompt_ids) + len(c.answer_ids) for c in got])
    keep = np.ones(len(features), bool)
    keep[ends - 1] = False                       # each conversation's last token is never read: zeros
    assert not features[~keep].any()
    np.testing.assert_allclose(features[keep], reference[keep], rtol=1e-3, atol=1e-3 * np.abs(reference).max())


def test_the_archived_self_instruct_prompts_are_new_distinct_and_not_mtbench():
    # the user turns the committed head was trained on (sampled from the target, `train-draft-gpu`)
    from triton_eagle.train_draft import _self_instruct_from_file
    path = Path("heads/SmolLM2-135M-Instruct-Eagle3/self_instruct_prompts.jsonl")
    prompts = _self_instruct_from_file(path, training_prompts(1000, seed=0), 6000)
    assert len(prompts) == 6000 and all(usable_user_turn(p) for p in prompts)
    assert _self_instruct_from_file(path, [], 10) == prompts[:10]


def test_an_archived_prompt_that_copies_mtbench_is_refused(tmp_path):
    from triton_eagle.train_draft import _self_instruct_from_file
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps("Tell me a joke about cats.") + "\n" + json.dumps(mtbench_questions()[3].text) + "\n")
    with pytest.raises(SystemExit, match="prompt 2 is not a new string free of MT-Bench phrases"):
        _self_instruct_from_file(path, [], 0)
    with pytest.raises(SystemExit, match="holds 2 prompts, fewer than"):
        _self_instruct_from_file(path, [], 3)
