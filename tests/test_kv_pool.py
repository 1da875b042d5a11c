"""Batched attention over one engine's KV pool: same logits as sequences attending alone,
whatever the slots, gaps and new-token counts; storage follows the tokens in use."""
from __future__ import annotations

import gc

import numpy as np
import pytest

from python_backend.reference.llama import LlamaModel

LOGITS_TOLERANCE = dict(rtol=1e-4, atol=5e-4)   # float32 rounding of differently shaped matmuls
PROMPTS = [np.arange(100, 100 + length) * 7 % 4000 + 50 for length in (9, 23, 5, 14)]


@pytest.fixture(scope="module")
def model(smollm2_dir) -> LlamaModel:
    return LlamaModel.from_pretrained(smollm2_dir)


def prefill(model, prompts, pool=None):
    caches = [model.new_cache(pool) for _ in prompts]
    model.forward(list(prompts), caches, [1] * len(prompts))
    return caches


@pytest.mark.parametrize("new_tokens", [1, 4])
def test_pooled_batch_attends_like_each_sequence_alone(model, new_tokens):
    pool = model.new_pool()
    pooled = prefill(model, PROMPTS, pool)
    alone = prefill(model, PROMPTS)                     # a private pool each: the one-by-one path
    steps = [np.array([300 + 11 * i + j for j in range(new_tokens)]) for i in range(len(PROMPTS))]
    for _ in range(3):                                  # lengths differ per sequence and keep growing
        batched = model.forward(steps, pooled, [new_tokens] * len(PROMPTS)).logits
        for index, cache in enumerate(alone):
            expected = model.forward([steps[index]], [cache], [new_tokens]).logits[0]
            np.testing.assert_allclose(batched[index], expected, **LOGITS_TOLERANCE)
        steps = [np.array([int(row.argmax()) for row in logits]) for logits in batched]
    assert [c.length for c in pooled] == [c.length for c in alone]


def test_batch_order_need_not_follow_slot_order(model):
    pool = model.new_pool()
    caches = prefill(model, PROMPTS, pool)
    alone = prefill(model, PROMPTS)
    order = [2, 0, 3, 1]                                # the scheduler's order after joins and leaves
    for step in range(2):
        ids = [np.array([400 + 3 * i + step]) for i in order]
        batched = model.forward(ids, [caches[i] for i in order], [1] * len(order)).logits
        for position, index in enumerate(order):
            expected = model.forward([ids[position]], [alone[index]], [1]).logits[0]
            np.testing.assert_allclose(batched[position], expected, **LOGITS_TOLERANCE)


def test_gaps_in_the_slot_range_and_rollback_do_not_leak_between_sequences(model):
    pool = model.new_pool()
    caches = prefill(model, PROMPTS, pool)
    dropped = caches.pop(1)                             # slot 1 freed: the batch's range has a gap
    dropped.release()
    alone = prefill(model, [PROMPTS[0], PROMPTS[2], PROMPTS[3]])
    draft = [np.array([5, 6, 7]), np.array([8, 9, 10]), np.array([11, 12, 13])]
    model.forward(draft, caches, [3, 3, 3])             # a verification...
    for cache in caches:
        cache.truncate(cache.length - 2)                # ... with two rejected positions rolled back
    for cache, ids in zip(alone, draft):
        model.forward([ids[:1]], [cache], [1])     # what the pooled ones kept
    step = [np.array([42]), np.array([43]), np.array([44])]
    batched = model.forward(step, caches, [1, 1, 1]).logits
    for index, cache in enumerate(alone):
        np.testing.assert_allclose(batched[index], model.forward([step[index]], [cache], [1]).logits[0],
                                   **LOGITS_TOLERANCE)
    with pytest.raises(ValueError, match="released"):
        model.forward([np.array([1])], [dropped], [1])


def test_prompts_and_decodes_mix_in_one_call(model):
    pool = model.new_pool()
    running = prefill(model, PROMPTS[:2], pool)
    joining = model.new_cache(pool)
    out = model.forward([np.array([7]), np.array([8]), PROMPTS[2]], [*running, joining], [1, 1, 1]).logits
    alone = prefill(model, PROMPTS[:2])
    for index, cache in enumerate(alone):
        np.testing.assert_allclose(out[index], model.forward([np.array([7 + index])], [cache], [1]).logits[0],
                                   **LOGITS_TOLERANCE)
    np.testing.assert_allclose(out[2], model.forward([PROMPTS[2]], [model.new_cache()], [1]).logits[0],
                               **LOGITS_TOLERANCE)


def test_pool_storage_grows_with_use_and_is_given_back(model):
    pool = model.new_pool()
    assert pool.nbytes == 0
    caches = prefill(model, PROMPTS, pool)
    per_position = 2 * model.config.num_hidden_layers * model.config.num_key_value_heads \
        * model.config.head_dim * 4
    longest = max(len(p) for p in PROMPTS)
    # slots in use x the longest reservation, never max_seq_len
    assert pool.nbytes <= 2 * len(PROMPTS) * 2 * longest * per_position
    del caches
    gc.collect()
    assert pool.live_slots == 0
    pool.trim()
    assert pool.nbytes == 0
    again = prefill(model, PROMPTS[:1], pool)
    assert again[0].slot == 0                           # slots are reused from the lowest
