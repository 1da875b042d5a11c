"""Drafting by load: speculative_config.max_concurrency and draft_len_schedule, TensorRT-LLM's rules."""
from __future__ import annotations

import pytest

from python_backend.reference.draft_policy import DraftPolicy


def test_without_limits_every_step_drafts_the_full_length():
    policy = DraftPolicy(3, max_batch_size=32, max_num_tokens=8192)
    assert [policy.draft_len(n) for n in (1, 16, 32)] == [3, 3, 3]
    assert policy.draft_len(0) == 0


def test_max_concurrency_turns_drafting_off_above_it():
    policy = DraftPolicy(3, max_batch_size=32, max_num_tokens=8192, max_concurrency=4)
    assert [policy.draft_len(n) for n in (1, 4, 5, 16)] == [3, 3, 0, 0]


def test_max_concurrency_counts_only_requests_that_fit_the_batch_and_token_budget():
    # 16 requests, but only 8 fit max_batch_size and 40 // (1 + 3) = 10 fit max_num_tokens
    assert DraftPolicy(3, max_batch_size=8, max_num_tokens=8192, max_concurrency=8).draft_len(16) == 3
    assert DraftPolicy(3, max_batch_size=32, max_num_tokens=40, max_concurrency=10).draft_len(16) == 3
    assert DraftPolicy(3, max_batch_size=32, max_num_tokens=40, max_concurrency=9).draft_len(16) == 0


def test_schedule_takes_the_largest_threshold_at_or_below_the_batch_size():
    policy = DraftPolicy(3, max_batch_size=32, max_num_tokens=8192, draft_len_schedule={1: 3, 4: 2, 8: 0})
    assert [policy.draft_len(n) for n in (1, 3, 4, 7, 8, 32)] == [3, 3, 2, 2, 0, 0]


@pytest.mark.parametrize("kwargs, field", [
    (dict(max_concurrency=0), "max_concurrency"),
    (dict(draft_len_schedule={1: 4}), "draft_len_schedule"),
    (dict(draft_len_schedule={0: 1}), "draft_len_schedule"),
    # TensorRT-LLM's rule (llm_args.py DecodingBaseConfig): batch size 1 must draft max_draft_len
    (dict(draft_len_schedule={2: 3}), "must map batch size 1 to max_draft_len"),
    (dict(draft_len_schedule={1: 2, 4: 1}), "must map batch size 1 to max_draft_len"),
])
def test_bad_limits_are_refused_naming_the_key(kwargs, field):
    with pytest.raises(ValueError, match=field):
        DraftPolicy(3, max_batch_size=32, max_num_tokens=8192, **kwargs)
