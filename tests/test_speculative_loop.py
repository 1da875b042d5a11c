"""The speculative loop with a draft whose proposals we control.

The random test head is almost never right, so it cannot show that accepted drafts
and cache rollback are handled correctly. Here the draft proposes the target's own
greedy continuation (computed beforehand, target only) with deliberate mistakes:
greedy output must still equal target-only output token for token, and the
acceptance length must be what the mistake rate allows - which only happens if
both KV caches are rolled back to exactly the accepted tokens.
"""
from __future__ import annotations

import asyncio
import zlib

import numpy as np
import pytest

from python_backend.protocol import SamplingParams
from python_backend.reference.engine import ReferenceEngine


class _TokenLogCache:
    """Draft cache stand-in that records the tokens it was fed, so rollback is observable."""

    def __init__(self):
        self.tokens: list[int] = []

    @property
    def length(self) -> int:
        return len(self.tokens)

    def truncate(self, length: int) -> None:
        del self.tokens[length:]


class _Config:
    def __init__(self, vocab_size):
        self.draft_vocab_size = vocab_size


class ScriptedDraft:
    """Proposes reference[len(context)] where context = what the target has accepted,
    reconstructed only from the draft cache (so a missed rollback derails it)."""

    layers_to_capture = [-1]

    def __init__(self, references: dict[int, list[int]], vocab_size: int, mistake_every: int):
        self.references = references            # prompt's first token -> prompt + continuation
        self.config = _Config(vocab_size)
        self.vocab_size = vocab_size
        self.mistake_every = mistake_every

    def new_cache(self):
        return _TokenLogCache()

    def fuse(self, captured):
        return captured

    def draft_to_target(self, draft_ids):
        return np.asarray(draft_ids)

    def forward(self, token_ids, features, caches, num_logits):
        logits, hidden = [], []
        for ids, feats, cache, rows in zip(token_ids, features, caches, num_logits):
            cache.tokens.extend(int(t) for t in ids)
            context = cache.tokens
            reference = self._reference_for(context)
            position = len(context) + 1          # the draft row j predicts x_{j+2}
            if reference is not None and position < len(reference):
                token = reference[position]
            else:
                token = 0
            if zlib.crc32(bytes(str(context), "ascii")) % self.mistake_every == 0:
                token = (token + 1) % self.vocab_size   # a deliberate wrong guess
            row = np.full((1, self.vocab_size), -1e9, dtype=np.float32)
            row[0, token] = 0.0
            logits.append(np.repeat(row, rows, axis=0))
            hidden.append(feats if feats.shape[0] == len(ids) else np.repeat(feats[-1:], len(ids), axis=0))
        return logits, hidden

    def _reference_for(self, fed_tokens):
        # fed tokens are x_1..x_m; find the reference whose x_1.. matches
        for reference in self.references.values():
            if reference[1:1 + len(fed_tokens)] == fed_tokens:
                return reference
        return None


@pytest.fixture(scope="module")
def target(smollm2_dir):
    from python_backend.reference.llama import LlamaModel

    return LlamaModel.from_pretrained(smollm2_dir)


PROMPTS = [
    [1, 504, 3458, 282, 4649, 314],
    [1, 11, 33, 2050, 314, 1352, 29],
    [1, 28, 905, 1064, 260, 4217],
    [1, 2000, 198, 48, 12, 6040, 30, 55],
]


async def _generate_all(engine, prompts, max_tokens):
    params = SamplingParams(max_tokens=max_tokens)

    async def one(prompt):
        tokens, final = [], None
        async for step in engine.generate_async(prompt, params):
            tokens.extend(step.token_ids_diff)
            final = step
        return tokens, final.stats

    return await asyncio.gather(*(one(p) for p in prompts))


def _target_only(target, max_tokens):
    """Target-only greedy runs of PROMPTS, and each prompt + continuation by index."""
    baseline = ReferenceEngine(target, None, draft_len=0, max_seq_len=512)
    try:
        runs = asyncio.run(_generate_all(baseline, PROMPTS, max_tokens))
    finally:
        baseline.shutdown()
    return runs, {i: PROMPTS[i] + tokens for i, (tokens, _) in enumerate(runs)}


def test_accepted_drafts_roll_back_both_caches_and_stay_lossless(target):
    max_tokens = 20
    reference_runs, references = _target_only(target, max_tokens)
    # every prompt starts with token 1, so references are told apart by their tokens after x_0
    assert len({tuple(r[1:4]) for r in references.values()}) == len(PROMPTS)

    draft = ScriptedDraft(references, target.config.vocab_size, mistake_every=5)
    engine = ReferenceEngine(target, draft, draft_len=3, max_seq_len=512)
    try:
        runs = asyncio.run(_generate_all(engine, PROMPTS, max_tokens))
    finally:
        engine.shutdown()

    for (expected, _), (got, stats) in zip(reference_runs, runs):
        assert got == expected
    accepted = sum(stats.total_accepted_draft_tokens for _, stats in runs)
    steps = sum(stats.drafting_steps for _, stats in runs)
    acceptance_length = 1 + accepted / steps
    # ~1 guess in 5 is wrong, so a 3-token chain is mostly accepted; a missed
    # rollback would misalign the draft's context and drive this towards 1.
    assert acceptance_length > 2.2, acceptance_length


@pytest.mark.parametrize("limit", [dict(max_concurrency=1), dict(draft_len_schedule={1: 3, 2: 0})])
def test_drafting_paused_by_load_resumes_with_the_whole_context(target, limit):
    """All four requests run together without drafting; as they finish, the last one drafts
    again. The scripted draft only guesses right if it caught up on every token accepted
    while drafting was off."""
    max_tokens = 24
    reference_runs, references = _target_only(target, max_tokens)
    # staggered lengths: the requests finish one by one, the last one alone (PROMPTS[3]'s answer
    # is a single token, so it goes first)
    prompts_and_lengths = list(zip(PROMPTS, (6, 10, max_tokens, 1)))

    draft = ScriptedDraft(references, target.config.vocab_size, mistake_every=5)
    engine = ReferenceEngine(target, draft, draft_len=3, max_seq_len=512, **limit)

    async def run_all():
        async def one(prompt, length):
            tokens, final = [], None
            async for step in engine.generate_async(prompt, SamplingParams(max_tokens=length)):
                tokens.extend(step.token_ids_diff)
                final = step
            return tokens, final.stats
        return await asyncio.gather(*(one(p, n) for p, n in prompts_and_lengths))

    try:
        runs = asyncio.run(run_all())
    finally:
        engine.shutdown()
    for (expected, _), (got, _), (_, length) in zip(reference_runs, runs, prompts_and_lengths):
        assert got == expected[:length]
    last_stats = runs[2][1]
    # the long request drafted only once alone, and then mostly right
    assert 0 < last_stats.drafting_steps < max_tokens - 10
    assert 1 + last_stats.total_accepted_draft_tokens / last_stats.drafting_steps > 2.2
    assert runs[0][1].drafting_steps == 0        # never alone
