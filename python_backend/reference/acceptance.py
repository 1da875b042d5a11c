"""Verification of K draft tokens against the target's K+1 distributions.

Row i of the target's output is its distribution for the token after draft i-1 (row 0:
after the last accepted token), so every call yields the accepted drafts plus exactly one
target-chosen token: the correction at the first rejection, or the bonus after all K.
"""
from __future__ import annotations

import numpy as np

from python_backend.reference.sampling import sample


def accept_greedy(draft_tokens: np.ndarray, target_logits: np.ndarray) -> list[int]:
    """Longest prefix of drafts equal to the target's argmax, then the target's own token."""
    draft_tokens = np.asarray(draft_tokens, dtype=np.int64).reshape(-1)
    target_logits = np.asarray(target_logits)
    if target_logits.ndim != 2 or len(target_logits) != len(draft_tokens) + 1:
        raise ValueError(f"target_logits must be ({len(draft_tokens) + 1}, V) for {len(draft_tokens)} drafts, "
                         f"got {target_logits.shape}")
    target_choice = np.argmax(target_logits, axis=-1)
    accepted: list[int] = []
    for draft, choice in zip(draft_tokens, target_choice):
        if draft != choice:
            break
        accepted.append(int(draft))
    accepted.append(int(target_choice[len(accepted)]))
    return accepted


def accept_rejection(draft_tokens: np.ndarray, draft_probs: np.ndarray, target_probs: np.ndarray,
                     rng: np.random.Generator) -> list[int]:
    """Speculative rejection sampling (Leviathan et al. 2023; Chen et al. 2023).

    draft_probs (K, V): the distributions the drafts were drawn from, over the TARGET vocab
    (one-hot rows for greedy drafts). target_probs (K+1, V). Draft d_i is kept with
    probability min(1, p_i(d_i) / q_i(d_i)); on rejection the replacement is drawn from
    normalize(max(p_i - q_i, 0)) and drafting stops; with all kept, the bonus comes from
    p_K. Each output token is then distributed exactly as the target's.
    """
    draft_tokens = np.asarray(draft_tokens, dtype=np.int64).reshape(-1)
    num_drafts = len(draft_tokens)
    draft_probs = np.asarray(draft_probs, dtype=np.float64).reshape(num_drafts, -1) if num_drafts else \
        np.zeros((0, np.shape(target_probs)[-1]))
    target_probs = np.asarray(target_probs, dtype=np.float64)
    if target_probs.shape != (num_drafts + 1, draft_probs.shape[-1]):
        raise ValueError(f"target_probs must be ({num_drafts + 1}, {draft_probs.shape[-1]}) for "
                         f"{num_drafts} drafts, got {target_probs.shape}")
    accepted: list[int] = []
    for index, token in enumerate(draft_tokens):
        p, q = target_probs[index], draft_probs[index]
        if not q[token] > 0.0:
            raise ValueError(f"draft token {int(token)} at position {index} has draft probability 0: "
                             "draft_probs must be the distribution the draft was sampled from")
        if rng.random() * q[token] < p[token]:          # u < p/q without dividing
            accepted.append(int(token))
            continue
        residual = np.maximum(p - q, 0.0)
        # p(d) < q(d) here, so the residual has mass >= q(d) - p(d) > 0; guard rounding anyway
        accepted.append(sample(residual if residual.sum() > 0.0 else p, rng))
        return accepted
    accepted.append(sample(target_probs[num_drafts], rng))
    return accepted
