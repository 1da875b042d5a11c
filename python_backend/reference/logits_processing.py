"""Per-request logit rules: min_tokens and bad words, applied row by row.

Row r of a verification pass predicts output token `len(output_ids) + r`, with the
drafted tokens before it as context, so the rules see exactly what a
target-only decoder would have seen at that position (greedy stays lossless).
"""
from __future__ import annotations

import numpy as np

from python_backend.reference.sequence import SequenceState


def process_logits(seq: SequenceState, logits: np.ndarray, drafted: list[int]) -> np.ndarray:
    """Return logits (rows, V) with banned tokens at -inf; copies only when needed."""
    params = seq.params
    rows = logits.shape[0]
    out = logits
    for row in range(rows):
        banned: list[int] = []
        if len(seq.output_ids) + row < params.min_tokens:
            banned.append(seq.end_id)
            banned.extend(params.stop_token_ids)
        if params.bad_words_ids:
            banned.extend(_bad_word_bans(seq, drafted[:row], params.bad_words_ids))
        if banned:
            if out is logits:
                out = logits.copy()
            out[row, banned] = -np.inf
    return out


def _bad_word_bans(seq: SequenceState, drafted: list[int], bad_words_ids) -> list[int]:
    bans = []
    for words in bad_words_ids:
        prefix = list(words[:-1])
        if not prefix:
            bans.append(words[-1])
            continue
        context = seq.history_tail(max(0, len(prefix) - len(drafted))) + drafted
        if context[-len(prefix):] == prefix:
            bans.append(words[-1])
    return bans
