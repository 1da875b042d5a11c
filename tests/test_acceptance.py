"""Verification (greedy and rejection sampling) and the sampling filters it relies on.

The rejection-sampling tests run the whole speculative loop on a small synthetic Markov
chain (V=6): target P and a deliberately different draft Q. If acceptance is right, the
tokens that come out are distributed exactly as the target's chain; a chi-square test at
p > 1e-4 (fixed seed) checks the first token, the second token and their joint.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from python_backend.reference.acceptance import accept_greedy, accept_rejection
from python_backend.reference.sampling import ban_tokens, filtered_probs, greedy_tokens, sample

VOCAB = 6
START_TOKEN = 0
MIN_P_VALUE = 1e-4


# -- a chi-square p-value without scipy ---------------------------------------------------
def _chi2_survival(statistic: float, degrees_of_freedom: int) -> float:
    """P(X >= statistic) for X ~ chi2(df): the regularized upper incomplete gamma Q(df/2, x/2)."""
    a, x = degrees_of_freedom / 2.0, statistic / 2.0
    if x <= 0:
        return 1.0
    log_prefactor = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1:                                   # series for the lower function P
        term = total = 1.0 / a
        n = a
        while abs(term) > 1e-16 * abs(total):
            n += 1
            term *= x / n
            total += term
        return max(0.0, 1.0 - total * math.exp(log_prefactor))
    tiny = 1e-300                                   # Lentz's continued fraction for Q
    b = x + 1 - a
    c, d = 1 / tiny, 1 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = 1 / (d if abs(d) > tiny else tiny)
        c = b + an / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        if abs(d * c - 1) < 1e-16:
            break
    return math.exp(log_prefactor) * h


def _chi2_p_value(counts: np.ndarray, expected_probs: np.ndarray) -> float:
    """Pearson goodness of fit; cells the target gives probability 0 must stay empty."""
    counts, expected_probs = counts.ravel(), expected_probs.ravel()
    impossible = expected_probs == 0
    assert counts[impossible].sum() == 0, "a token the target never emits came out"
    expected = counts.sum() * expected_probs[~impossible]
    statistic = float(((counts[~impossible] - expected) ** 2 / expected).sum())
    return _chi2_survival(statistic, int((~impossible).sum()) - 1)


def test_chi2_helper_matches_known_values():
    assert _chi2_survival(3.0, 2) == pytest.approx(math.exp(-1.5), rel=1e-12)   # df=2: exp(-x/2)
    assert _chi2_survival(3.841458820694124, 1) == pytest.approx(0.05, rel=1e-9)
    assert _chi2_survival(55.75848, 40) == pytest.approx(0.05, rel=1e-4)        # tables: chi2_{0.95}(40)
    assert _chi2_survival(0.0, 5) == 1.0


# -- the synthetic target / draft pair ------------------------------------------------------
def _markov_pair():
    rng = np.random.default_rng(2024)
    target = 0.3 + rng.dirichlet(np.ones(VOCAB), size=VOCAB)
    target[START_TOKEN, 5] = 0.0        # a token the target never emits after the start
    target[2, 1] = 0.0
    target /= target.sum(axis=1, keepdims=True)
    draft = 0.5 * target + 0.5 * rng.dirichlet(np.full(VOCAB, 0.5), size=VOCAB)
    draft[START_TOKEN, 5] = 0.2         # ...which the draft proposes anyway
    draft[:, 4] = 0.0                   # and one the draft never proposes (as after top-k)
    draft /= draft.sum(axis=1, keepdims=True)
    return target, draft


TARGET_P, DRAFT_Q = _markov_pair()


def _generate_two_tokens(rng: np.random.Generator, num_drafts: int, greedy_draft: bool):
    """Speculative rounds from START_TOKEN until two tokens are out; also: was draft 1 accepted."""
    produced: list[int] = []
    last = START_TOKEN
    first_draft_accepted = None
    while len(produced) < 2:
        drafts, draft_rows, previous = [], [], last
        for _ in range(num_drafts):
            row = np.eye(VOCAB)[np.argmax(DRAFT_Q[previous])] if greedy_draft else DRAFT_Q[previous]
            token = sample(row, rng)
            drafts.append(token)
            draft_rows.append(row)
            previous = token
        target_rows = np.array([TARGET_P[last]] + [TARGET_P[d] for d in drafts])
        accepted = accept_rejection(np.array(drafts), np.array(draft_rows), target_rows, rng)
        assert 1 <= len(accepted) <= num_drafts + 1
        assert accepted[:-1] == drafts[: len(accepted) - 1]
        if first_draft_accepted is None:
            # a rejected draft is never redrawn: the residual max(p - q, 0) is 0 at it
            first_draft_accepted = accepted[0] == drafts[0]
        produced.extend(accepted)
        last = accepted[-1]
    return produced[0], produced[1], first_draft_accepted


@pytest.mark.parametrize("num_drafts, greedy_draft", [(3, False), (2, True)],
                         ids=["sampled-draft-K3", "greedy-draft-K2"])
def test_rejection_sampling_output_is_distributed_as_the_target(num_drafts, greedy_draft):
    rng = np.random.default_rng(12345)
    num_runs = 40_000
    joint = np.zeros((VOCAB, VOCAB), dtype=np.int64)
    first_accepted = 0
    for _ in range(num_runs):
        first, second, accepted = _generate_two_tokens(rng, num_drafts, greedy_draft)
        joint[first, second] += 1
        first_accepted += accepted

    first_probs = TARGET_P[START_TOKEN]
    joint_probs = first_probs[:, None] * TARGET_P
    assert _chi2_p_value(joint.sum(axis=1), first_probs) > MIN_P_VALUE
    assert _chi2_p_value(joint.sum(axis=0), joint_probs.sum(axis=0)) > MIN_P_VALUE
    assert _chi2_p_value(joint, joint_probs) > MIN_P_VALUE

    # and the drafts are used as well as theory allows: P(accept d_1) = sum_x min(p(x), q(x))
    q_first = np.eye(VOCAB)[np.argmax(DRAFT_Q[START_TOKEN])] if greedy_draft else DRAFT_Q[START_TOKEN]
    expected_rate = float(np.minimum(first_probs, q_first).sum())
    sigma = math.sqrt(expected_rate * (1 - expected_rate) / num_runs)
    assert abs(first_accepted / num_runs - expected_rate) < 5 * sigma


def test_rejection_sampling_with_a_perfect_draft_accepts_everything():
    rng = np.random.default_rng(0)
    for _ in range(200):
        drafts = [sample(TARGET_P[START_TOKEN], rng)]
        drafts.append(sample(TARGET_P[drafts[0]], rng))
        target_rows = np.array([TARGET_P[START_TOKEN], TARGET_P[drafts[0]], TARGET_P[drafts[1]]])
        accepted = accept_rejection(np.array(drafts), target_rows[:2], target_rows, rng)
        assert accepted[:2] == drafts and len(accepted) == 3
        assert target_rows[2][accepted[2]] > 0


def test_rejection_sampling_never_keeps_a_token_the_target_rules_out():
    rng = np.random.default_rng(1)
    target = np.array([[0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    draft = np.array([[0.1, 0.1, 0.8, 0.0]])
    for _ in range(300):
        accepted = accept_rejection(np.array([2]), draft, target, rng)
        assert len(accepted) == 1 and accepted[0] in (0, 1)


def test_rejection_sampling_refuses_a_draft_with_zero_draft_probability():
    with pytest.raises(ValueError, match="draft probability 0"):
        accept_rejection(np.array([1]), np.array([[1.0, 0.0]]), np.array([[0.5, 0.5], [0.5, 0.5]]),
                         np.random.default_rng(0))


# -- greedy ---------------------------------------------------------------------------------
def _logits_choosing(tokens: list[int], vocab: int = 8) -> np.ndarray:
    logits = np.zeros((len(tokens), vocab), dtype=np.float32)
    logits[np.arange(len(tokens)), tokens] = 5.0
    return logits


def test_greedy_all_drafts_match_adds_the_bonus_token():
    assert accept_greedy(np.array([3, 1, 4]), _logits_choosing([3, 1, 4, 7])) == [3, 1, 4, 7]


def test_greedy_stops_at_the_first_mismatch_with_the_targets_token():
    assert accept_greedy(np.array([3, 1, 4]), _logits_choosing([3, 2, 4, 7])) == [3, 2]


def test_greedy_first_draft_wrong_yields_only_the_targets_token():
    assert accept_greedy(np.array([3, 1, 4]), _logits_choosing([5, 1, 4, 7])) == [5]


def test_greedy_without_drafts_is_plain_decoding():
    assert accept_greedy(np.array([], dtype=np.int64), _logits_choosing([6])) == [6]


def test_greedy_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\(3, V\)"):
        accept_greedy(np.array([1, 2]), _logits_choosing([1, 2]))


# -- filters --------------------------------------------------------------------------------
def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def test_temperature_scales_logits_before_softmax():
    logits = np.array([[2.0, 1.0, 0.0, -1.0]])
    np.testing.assert_allclose(filtered_probs(logits, 0.5)[0], _softmax(logits[0] / 0.5))
    np.testing.assert_allclose(filtered_probs(logits, 1.0)[0], _softmax(logits[0]))


def test_top_p_applies_to_the_top_k_renormalised_distribution():
    logits = np.log(np.array([[0.4, 0.3, 0.2, 0.1]]))
    np.testing.assert_allclose(filtered_probs(logits, 1.0, top_k=2)[0], [4 / 7, 3 / 7, 0, 0])
    # top-k first: 4/7 >= 0.5 alone (top-p first would have kept two tokens)
    np.testing.assert_allclose(filtered_probs(logits, 1.0, top_k=2, top_p=0.5)[0], [1, 0, 0, 0])
    np.testing.assert_allclose(filtered_probs(logits, 1.0, top_p=0.5)[0], [4 / 7, 3 / 7, 0, 0])
    np.testing.assert_allclose(filtered_probs(logits, 1.0, top_p=0.85)[0], [4 / 9, 3 / 9, 2 / 9, 0])
    np.testing.assert_allclose(filtered_probs(logits, 1.0, top_p=0.95)[0], [0.4, 0.3, 0.2, 0.1])   # 0.9 < 0.95


@settings(max_examples=200, deadline=None)
@given(logits=arrays(np.float64, (3, 7), elements=st.floats(-8, 8)),
       top_k=st.integers(0, 9), top_p=st.floats(0.05, 1.0), temperature=st.floats(0.2, 3.0))
def test_filtered_probs_keep_exactly_the_top_k_then_minimal_top_p_set(logits, top_k, top_p, temperature):
    probs = filtered_probs(logits, temperature, top_k, top_p)
    assert probs.shape == logits.shape
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    for row, got in zip(logits, probs):
        scaled = row / temperature
        by_logit = np.argsort(-scaled, kind="stable")
        kept = by_logit[:top_k] if 0 < top_k < len(row) else by_logit
        top_k_probs = np.zeros_like(scaled)
        top_k_probs[kept] = _softmax(scaled[kept])
        expected = top_k_probs
        if top_p < 1.0:
            # the smallest most-probable set of the top-k distribution whose mass reaches top_p
            by_prob = np.argsort(-top_k_probs, kind="stable")
            mass = np.cumsum(top_k_probs[by_prob])
            size = next((n + 1 for n in range(len(mass)) if mass[n] >= top_p), len(mass))
            expected = np.zeros_like(scaled)
            expected[by_prob[:size]] = top_k_probs[by_prob[:size]] / mass[size - 1]
        np.testing.assert_allclose(got, expected, atol=1e-12)


def test_banned_tokens_get_no_probability_and_all_banned_is_an_error():
    logits = np.array([[1.0, 3.0, 2.0, 0.5]], dtype=np.float32)
    banned = ban_tokens(logits, [1, 3])
    assert logits[0, 1] == 3.0                         # a copy: the input is untouched
    assert banned.dtype == np.float32 and np.isneginf(banned[0, [1, 3]]).all()
    probs = filtered_probs(banned, 1.0)
    assert probs[0, 1] == 0.0 and probs[0, 3] == 0.0
    np.testing.assert_allclose(probs[0, [0, 2]], _softmax(np.array([1.0, 2.0])))
    assert greedy_tokens(banned).tolist() == [2]
    with pytest.raises(ValueError, match="every token banned"):
        filtered_probs(ban_tokens(logits, range(4)), 1.0)
    with pytest.raises(ValueError, match="banned token ids"):
        ban_tokens(logits, [4])


def test_invalid_filter_settings_are_refused_with_their_names():
    logits = np.zeros((1, 3))
    with pytest.raises(ValueError, match="temperature"):
        filtered_probs(logits, 0.0)
    with pytest.raises(ValueError, match="top_k"):
        filtered_probs(logits, 1.0, top_k=-1)
    with pytest.raises(ValueError, match="top_p"):
        filtered_probs(logits, 1.0, top_p=0.0)


def test_sample_follows_the_distribution_and_skips_zero_mass_ids():
    probs = np.array([0.0, 0.5, 0.0, 0.2, 0.3, 0.0])
    rng = np.random.default_rng(3)
    counts = np.bincount([sample(probs, rng) for _ in range(20_000)], minlength=len(probs))
    assert _chi2_p_value(counts, probs) > MIN_P_VALUE
    assert sample(np.array([0.0, 0.0, 2.0]), rng) == 2     # unnormalised rows are fine
    with pytest.raises(ValueError):
        sample(np.zeros(3), rng)
