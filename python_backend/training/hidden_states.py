"""The target's hidden states at the captured layers, for every position of prompt + answer.

One prefill-style forward per batch of conversations (no logits needed). Kept as float32:
the residual stream of small Llamas has a few large outlier dimensions.
"""
from __future__ import annotations

import time

import numpy as np

from python_backend.training.synthesize import Conversation


def record_hidden_states(target, conversations: list[Conversation], capture_layers: list[int],
                         tokens_per_batch: int = 4096, log=print) -> np.ndarray:
    """(total tokens, len(capture_layers) * hidden), conversations concatenated in order."""
    lengths = [len(c.prompt_ids) + len(c.answer_ids) for c in conversations]
    width = len(capture_layers) * target.config.hidden_size
    features = np.empty((sum(lengths), width), dtype=np.float32)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    start_time, index = time.perf_counter(), 0
    while index < len(conversations):
        batch = [index]
        while batch[-1] + 1 < len(conversations) and sum(lengths[i] for i in batch) + lengths[batch[-1] + 1] \
                <= tokens_per_batch:
            batch.append(batch[-1] + 1)
        token_ids = [np.asarray(conversations[i].prompt_ids + conversations[i].answer_ids, dtype=np.int64)
                     for i in batch]
        out = target.forward(token_ids, [target.new_cache() for _ in batch], [0] * len(batch), capture_layers)
        for i, captured in zip(batch, out.captured):
            features[starts[i]:starts[i + 1]] = captured
        index = batch[-1] + 1
    log(f"  hidden states: {len(features)} tokens x {width} in {time.perf_counter() - start_time:.0f} s")
    return features
