"""One engine step for a batch of sequences: prefill, EAGLE-3 drafting, verification.

The algorithm, per running sequence with pending token x_n:
  1. draft: the head first catches up on rows it has not seen (tokens x_{j+1} with the
     target features f_j), then chains max_draft_len tokens d_1..d_K, each step feeding its
     own hidden state back as the feature;
  2. verify: ONE target forward over [x_n, d_1..d_K] (K+1 rows), captured features kept;
  3. accept the longest prefix the target agrees with plus one target token (greedy), or
     speculative rejection sampling (temperature > 0) - either way the output
     distribution is the target's;
  4. roll both KV caches back to what was accepted.
New sequences are prefilled in the same target forward as the verifications (one pass
over the weights for the whole batch). A DraftPolicy may shorten or skip drafting for a
step by load; the draft then keeps catching up on what the target accepted, so it resumes
with its whole context.
"""
from __future__ import annotations

import numpy as np

from python_backend.reference.acceptance import accept_greedy, accept_rejection
from python_backend.reference.draft_policy import DraftPolicy
from python_backend.reference.logits_processing import process_logits
from python_backend.reference.sampling import filtered_probs, sample
from python_backend.reference.sequence import SequenceState


class SpeculativeDecoder:
    def __init__(self, target, draft=None, draft_len: int = 0, policy: DraftPolicy | None = None):
        self.target = target
        self.draft = draft if draft_len > 0 else None
        self.draft_len = draft_len if self.draft is not None else 0
        self.policy = policy          # None: every step drafts draft_len tokens
        self.capture_layers = list(self.draft.layers_to_capture) if self.draft else []
        self.vocab_size = target.config.vocab_size
        if self.draft is not None:
            draft_vocab = self.draft.config.draft_vocab_size
            # target id of every draft id, to lift draft distributions into the target vocab
            self.draft_to_target_ids = np.asarray(self.draft.draft_to_target(np.arange(draft_vocab)))

    def step(self, prefill: list[SequenceState], decode: list[SequenceState]) -> dict[int, list[int]]:
        """Run one step; return the new tokens of each sequence (by request_id)."""
        drafts: dict[int, tuple[list[int], np.ndarray | None]] = {}
        draft_len = self.draft_len if self.policy is None else min(
            self.draft_len, self.policy.draft_len(len(prefill) + len(decode)))
        if self.draft is not None and decode and draft_len > 0:
            drafts = self._draft(decode, draft_len)

        token_ids, caches, num_logits = [], [], []
        for seq in prefill:
            seq.target_cache = self.target.new_cache()
            token_ids.append(np.asarray(seq.prompt_ids, dtype=np.int64))
            caches.append(seq.target_cache)
            num_logits.append(1)
        for seq in decode:
            drafted = drafts.get(seq.request_id, ([], None))[0]
            token_ids.append(np.asarray([seq.pending_token, *drafted], dtype=np.int64))
            caches.append(seq.target_cache)
            num_logits.append(1 + len(drafted))
        out = self.target.forward(token_ids, caches, num_logits, self.capture_layers)

        new_tokens: dict[int, list[int]] = {}
        for index, seq in enumerate(prefill):
            logits = process_logits(seq, out.logits[index], [])
            token = self._sample_one(seq, logits[-1])
            if self.draft is not None:
                # the draft's prompt rows: tokens x_1..x_n with features f_0..f_{n-1}
                seq.catchup_token_ids = seq.prompt_ids[1:] + [token]
                seq.catchup_features = self.draft.fuse(out.captured[index])
            new_tokens[seq.request_id] = [token]
        for offset, seq in enumerate(decode):
            index = len(prefill) + offset
            drafted, draft_probs = drafts.get(seq.request_id, ([], None))
            accepted = self._verify(seq, out.logits[index], drafted, draft_probs)
            num_kept_drafts = len(accepted) - 1
            # keep x_n and the accepted drafts; the last token stays pending
            seq.target_cache.truncate(seq.target_cache.length - len(drafted) + num_kept_drafts)
            if self.draft is not None:
                # appended: after a step without drafting the previous rows are still waiting
                features = self.draft.fuse(out.captured[index][: num_kept_drafts + 1])
                seq.catchup_token_ids = seq.catchup_token_ids + accepted
                seq.catchup_features = features if seq.catchup_features is None else np.concatenate(
                    [seq.catchup_features, features])
            if drafted:
                seq.stats.drafting_steps += 1
                seq.stats.total_draft_tokens += len(drafted)
                seq.stats.total_accepted_draft_tokens += num_kept_drafts
            new_tokens[seq.request_id] = accepted
        return new_tokens

    # -- drafting ---------------------------------------------------------------------
    def _draft(self, seqs: list[SequenceState], draft_len: int) -> dict[int, tuple[list[int], np.ndarray | None]]:
        """Chain `draft_len` draft tokens per sequence (batched); roll the draft cache back."""
        for seq in seqs:
            if seq.draft_cache is None:
                seq.draft_cache = self.draft.new_cache()
        base_lengths = [seq.draft_cache.length + len(seq.catchup_token_ids) for seq in seqs]
        token_ids = [np.asarray(seq.catchup_token_ids, dtype=np.int64) for seq in seqs]
        features = [seq.catchup_features for seq in seqs]
        drafted: list[list[int]] = [[] for _ in seqs]
        probs: list[list[np.ndarray]] = [[] for _ in seqs]
        for _ in range(draft_len):
            logits, hidden = self.draft.forward(token_ids, features, [s.draft_cache for s in seqs],
                                                [1] * len(seqs))
            token_ids, features = [], []
            for index, seq in enumerate(seqs):
                draft_id, q_target = self._propose(seq, logits[index][-1])
                target_id = int(self.draft_to_target_ids[draft_id])
                drafted[index].append(target_id)
                if q_target is not None:
                    probs[index].append(q_target)
                token_ids.append(np.asarray([target_id], dtype=np.int64))
                features.append(hidden[index][-1:])
        result = {}
        for index, seq in enumerate(seqs):
            # rows written while chaining are speculative: only the catch-up rows stay
            seq.draft_cache.truncate(base_lengths[index])
            seq.catchup_token_ids, seq.catchup_features = [], None
            result[seq.request_id] = (drafted[index], np.stack(probs[index]) if probs[index] else None)
        return result

    def _propose(self, seq: SequenceState, draft_logits: np.ndarray) -> tuple[int, np.ndarray | None]:
        """A draft token (draft vocab id) and, when sampling, its distribution over the target vocab."""
        params = seq.params
        if params.greedy:
            return int(np.argmax(draft_logits)), None
        q_draft = filtered_probs(draft_logits[None, :], params.temperature, params.top_k, params.top_p)[0]
        draft_id = sample(q_draft, seq.rng)
        q_target = np.zeros(self.vocab_size, dtype=np.float64)
        q_target[self.draft_to_target_ids] = q_draft
        return draft_id, q_target

    # -- verification -----------------------------------------------------------------
    def _verify(self, seq, target_logits, drafted: list[int], draft_probs) -> list[int]:
        logits = process_logits(seq, target_logits, drafted)
        params = seq.params
        if not drafted:
            return [self._sample_one(seq, logits[-1])]
        if params.greedy:
            return [int(t) for t in accept_greedy(np.asarray(drafted), logits)]
        target_probs = filtered_probs(logits, params.temperature, params.top_k, params.top_p)
        return [int(t) for t in accept_rejection(np.asarray(drafted), draft_probs, target_probs, seq.rng)]

    def _sample_one(self, seq: SequenceState, logits_row: np.ndarray) -> int:
        params = seq.params
        if params.greedy:
            return int(np.argmax(logits_row))
        probs = filtered_probs(logits_row[None, :], params.temperature, params.top_k, params.top_p)[0]
        return int(sample(probs, seq.rng))
