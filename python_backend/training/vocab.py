"""The draft vocabulary: the target ids the head can propose, and the d2t / t2d maps.

A smaller output layer makes every draft step cheaper; tokens outside it can never be
drafted, so it keeps the ids the target actually writes most often in its answers.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from python_backend.reference.eagle3 import select_draft_vocab


@dataclass
class DraftVocab:
    draft_target_ids: np.ndarray     # (draft_vocab,) ascending target ids
    target_to_draft: np.ndarray      # (vocab,) draft id of each target id, -1 outside the draft vocab

    @property
    def d2t(self) -> np.ndarray:
        """Offsets in the public layout: target id = draft id + d2t[draft id]."""
        return self.draft_target_ids - np.arange(len(self.draft_target_ids), dtype=np.int64)

    @property
    def t2d(self) -> np.ndarray:
        """(vocab,) bool: is this target id in the draft vocab."""
        return self.target_to_draft >= 0

    def coverage(self, token_ids: np.ndarray) -> float:
        """Fraction of `token_ids` the draft vocab contains."""
        return float(np.mean(self.target_to_draft[np.asarray(token_ids)] >= 0)) if len(token_ids) else 0.0


def build_draft_vocab(answers: list[list[int]], vocab_size: int, draft_vocab_size: int) -> DraftVocab:
    """The `draft_vocab_size` target ids most frequent in the answers.

    Ids never seen fill the rest by ascending id: byte-level BPE assigns low ids to early,
    frequent merges, so that order is a fair guess at frequency.
    """
    counts = np.bincount(np.concatenate([np.asarray(a, dtype=np.int64) for a in answers]),
                         minlength=vocab_size)
    draft_target_ids = select_draft_vocab(vocab_size, draft_vocab_size, counts)
    target_to_draft = np.full(vocab_size, -1, dtype=np.int64)
    target_to_draft[draft_target_ids] = np.arange(draft_vocab_size)
    return DraftVocab(draft_target_ids, target_to_draft)
