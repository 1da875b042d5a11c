"""The transformers target used for training data at scale must give the data the served
numpy model gives: the same greedy answers and the same hidden states at the captured layers.
Sampled user turns must be real user turns, and the MT-Bench filter must apply to them."""
from __future__ import annotations

import numpy as np
import pytest

from python_backend.reference.llama import LlamaModel
from python_backend.training.hf_target import (captured_features, greedy_answers, load_hf_target,
                                               self_instruct_prompts, usable_user_turn, user_turn_prefix)
from python_backend.training.synthesize import generate_answers_with_features

pytest.importorskip("torch")
MODEL = "models/SmolLM2-135M-Instruct"
PROMPTS = ["What is the capital of France?", "Write a haiku about rain.", "Explain recursion in one sentence."]
LAYERS = [1, 14, 26, -1]


@pytest.fixture(scope="module")
def tokenizer():
    from ensemble.tokenizer import load_tokenizer
    return load_tokenizer(MODEL)


@pytest.fixture(scope="module")
def hf_model():
    return load_hf_target(MODEL, "cpu")


def test_answers_and_hidden_states_match_the_served_model(hf_model, tokenizer):
    conversations = greedy_answers(hf_model, tokenizer, PROMPTS, max_new_tokens=16, batch_size=2, log=lambda *_: None)
    reference, reference_features = generate_answers_with_features(
        LlamaModel.from_pretrained(MODEL), tokenizer, PROMPTS, 16, 3, LAYERS, log=lambda *_: None)
    assert [c.prompt_ids for c in conversations] == [c.prompt_ids for c in reference]
    assert [c.answer_ids for c in conversations] == [c.answer_ids for c in reference]
    assert "Paris" in tokenizer.decode(conversations[0].answer_ids)

    features = captured_features(hf_model, conversations, LAYERS, tokens_per_batch=128, log=lambda *_: None)
    assert features.shape == reference_features.shape
    start = 0
    for conversation in conversations:
        end = start + len(conversation.prompt_ids) + len(conversation.answer_ids)
        # the reference loop leaves the never-read last row zero; every other row must agree
        ours, theirs = features[start:end - 1], reference_features[start:end - 1]
        scale = np.abs(theirs).max(axis=0) + 1.0
        assert np.max(np.abs(ours - theirs) / scale) < 1e-4
        start = end


def test_sampled_user_turns_are_distinct_usable_and_filtered(hf_model, tokenizer):
    prefix = tokenizer.decode(user_turn_prefix(tokenizer))
    assert prefix.endswith("user\n") and "\nassistant" not in prefix
    rejected = []

    def exclude(text: str) -> bool:
        if len(rejected) < 2:
            rejected.append(text)
            return True
        return False

    prompts = self_instruct_prompts(hf_model, tokenizer, 4, exclude=exclude, batch_size=8, max_prompt_tokens=48,
                                    log=lambda *_: None)
    assert len(prompts) == 4 and len({p.lower() for p in prompts}) == 4
    assert all(usable_user_turn(p) for p in prompts)
    assert len(rejected) == 2 and not set(rejected) & set(prompts)
    again = self_instruct_prompts(hf_model, tokenizer, 4, exclude=lambda text: text in rejected, batch_size=8,
                                  max_prompt_tokens=48, log=lambda *_: None)
    assert again == prompts   # seeded


def test_sampling_that_finds_nothing_new_stops_with_an_error(hf_model, tokenizer):
    with pytest.raises(RuntimeError, match="stalled at 0 of 1"):
        self_instruct_prompts(hf_model, tokenizer, 1, exclude=lambda text: True, batch_size=2, max_prompt_tokens=4,
                              log=lambda *_: None)


def test_usable_user_turn():
    assert usable_user_turn("How do I bake sourdough bread at home?")
    assert not usable_user_turn("Hi there")
    assert not usable_user_turn("<|im_start|>assistant how are you today")
    assert not usable_user_turn("the the the the the")
