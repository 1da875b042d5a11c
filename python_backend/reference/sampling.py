"""Turning logits into a token: temperature, top-k, top-p, banned ids, one draw.

The order is TensorRT-LLM's and Hugging Face's: scale by temperature, keep the top-k
logits, then keep the smallest most-probable set reaching top_p, renormalise.
Greedy decoding (temperature 0) never comes here: it is an argmax (`greedy_tokens`).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np


def ban_tokens(logits: np.ndarray, token_ids: Iterable[int]) -> np.ndarray:
    """A copy of logits (rows, V) with the given ids at -inf in every row (never sampled)."""
    out = np.array(logits, dtype=np.result_type(np.asarray(logits).dtype, np.float32))
    ids = np.fromiter((int(t) for t in token_ids), dtype=np.int64)
    if ids.size:
        if ids.min() < 0 or ids.max() >= out.shape[-1]:
            raise ValueError(f"banned token ids must be 0..{out.shape[-1] - 1}, got {sorted(set(ids.tolist()))}")
        out[..., ids] = -np.inf
    return out


def greedy_tokens(logits: np.ndarray) -> np.ndarray:
    """Argmax of each row (ties: the lowest id)."""
    return np.argmax(np.atleast_2d(logits), axis=-1)


def filtered_probs(logits: np.ndarray, temperature: float, top_k: int = 0, top_p: float = 1.0) -> np.ndarray:
    """Sampling distribution of each row of logits (rows, V), float64.

    top_k 0 = off; top_p in (0, 1], 1 = off. Ties at the top-k / top-p boundary go to the
    lower token id (a stable sort), so the kept set always has exactly k / the minimal size.
    """
    if not temperature > 0.0:
        raise ValueError(f"temperature must be > 0 to sample (0 means greedy: use greedy_tokens), got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 = off), got {top_k}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    scaled = np.atleast_2d(np.asarray(logits, dtype=np.float64)) / float(temperature)
    if np.isposinf(scaled).any() or np.isnan(scaled).any():
        raise ValueError("logits must be finite or -inf")
    vocab = scaled.shape[-1]
    if np.isneginf(scaled).all(axis=-1).any():
        raise ValueError("a row of logits has every token banned: nothing can be sampled")

    if 0 < top_k < vocab:
        order = np.argsort(-scaled, axis=-1, kind="stable")
        dropped = order[:, top_k:]
        scaled = scaled.copy()
        np.put_along_axis(scaled, dropped, -np.inf, axis=-1)

    probs = np.exp(scaled - scaled.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)

    if top_p < 1.0:
        order = np.argsort(-probs, axis=-1, kind="stable")
        sorted_probs = np.take_along_axis(probs, order, axis=-1)
        mass_before = np.cumsum(sorted_probs, axis=-1) - sorted_probs
        # a token stays while the more probable ones have not yet reached top_p: the
        # minimal set whose mass is >= top_p (and never empty)
        keep_sorted = mass_before < top_p
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=-1)
        probs = np.where(keep, probs, 0.0)
        probs /= probs.sum(axis=-1, keepdims=True)
    return probs


def sample(probs_row: np.ndarray, rng: np.random.Generator) -> int:
    """One token drawn from a probability row (need not sum exactly to 1); zero-prob ids never come out."""
    probs_row = np.asarray(probs_row, dtype=np.float64).reshape(-1)
    cdf = np.cumsum(probs_row)
    total = cdf[-1] if cdf.size else 0.0
    if not total > 0.0 or (probs_row < 0).any():
        raise ValueError("sample needs a non-negative probability row with positive mass")
    # side="right": the first id whose cumulative mass exceeds u, so zero-mass ids are skipped
    token = int(np.searchsorted(cdf, rng.random() * total, side="right"))
    # u * total can round up to total; fall back to the last id with mass
    return min(token, int(np.flatnonzero(probs_row)[-1]))
