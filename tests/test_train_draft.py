"""The torch training head computes what the numpy serving head computes, on the same weights.

Includes the training-time-test alignment: step k of the training unroll at row j must equal
the k-th chained draft step the engine runs after catching up on rows 0..j. A tiny random
config keeps it to about a second; skipped where torch (the `train` extra) is not installed.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch not installed: pip install -e '.[train]' to run the "
                                            "training-head equivalence tests")

from python_backend.reference.eagle3 import Eagle3Config, Eagle3DraftModel  # noqa: E402
from python_backend.training.head_model import head_config, head_from_target_config  # noqa: E402
from python_backend.training.ttt import Example, collate, unroll  # noqa: E402
from python_backend.training.vocab import build_draft_vocab  # noqa: E402

TARGET_CONFIG = {
    "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
    "intermediate_size": 96, "vocab_size": 120, "num_hidden_layers": 8, "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0, "max_position_embeddings": 256,
}
HIDDEN, VOCAB, DRAFT_VOCAB, LENGTH = 64, 120, 50, 12


def heads(layers: list[int], seed: int = 0):
    """A random torch head and the numpy head loaded from its exported weights."""
    rng = np.random.default_rng(seed)
    embed = rng.standard_normal((VOCAB, HIDDEN)).astype(np.float32)
    answers = [rng.integers(0, VOCAB, 200).tolist()]
    vocab = build_draft_vocab(answers, VOCAB, DRAFT_VOCAB)
    head = head_from_target_config(TARGET_CONFIG, len(layers), DRAFT_VOCAB, embed)
    torch.manual_seed(seed)
    with torch.no_grad():
        for parameter in head.parameters():   # norms away from 1 so their weights are exercised too
            is_norm = parameter.ndim == 1
            parameter.copy_(torch.randn(parameter.shape) * (0.3 if is_norm else 0.1) + (1.0 if is_norm else 0.0))
    weights = {**head.state_in_public_layout(), "d2t": vocab.d2t, "t2d": vocab.t2d}
    config = Eagle3Config.from_dict(head_config(TARGET_CONFIG, layers, DRAFT_VOCAB, "float32"))
    draft = Eagle3DraftModel(config, weights, embed, TARGET_CONFIG["num_hidden_layers"])
    return head, draft, vocab, rng


@pytest.mark.parametrize("layers", [[1, 3, 5], [-1]])
def test_training_unroll_equals_engine_chained_drafting(layers):
    head, draft, vocab, rng = heads(layers)
    tokens = rng.integers(0, VOCAB, LENGTH)
    captured = rng.standard_normal((LENGTH, len(layers) * HIDDEN)).astype(np.float32)
    batch = collate([Example(tokens, captured, answer_start=0)], vocab, ttt_steps=3)
    with torch.no_grad():
        step_logits = [head.logits(hidden)[0].numpy() for hidden in unroll(head, batch)]

    features = draft.fuse(captured)
    # step 0 over the whole sequence: rows j take (x_{j+1}, f_j)
    logits, hidden = draft.forward([tokens[1:]], [features[:-1]], [draft.new_cache()], [LENGTH - 1])
    np.testing.assert_allclose(logits[0], step_logits[0][:LENGTH - 1], rtol=1e-4, atol=1e-4)

    # chained steps, as the engine runs them after catching up on rows 0..j
    for row in range(LENGTH - 3):
        cache = draft.new_cache()
        logits, hidden = draft.forward([tokens[1:row + 2]], [features[:row + 1]], [cache], [1])
        feature = hidden[0][-1:]
        for k in (1, 2):
            logits, hidden = draft.forward([tokens[row + 1 + k: row + 2 + k]], [feature], [cache], [1])
            np.testing.assert_allclose(logits[0][0], step_logits[k][row], rtol=1e-4, atol=1e-4,
                                       err_msg=f"step {k}, row {row}")
            feature = hidden[0]


def test_draft_vocab_maps_round_trip():
    vocab = build_draft_vocab([[5, 5, 5, 7, 7, 9]], VOCAB, 4)
    assert vocab.draft_target_ids.tolist() == [0, 5, 7, 9]     # the 3 seen ids, then the lowest unseen
    targets = np.arange(4) + vocab.d2t
    assert targets.tolist() == vocab.draft_target_ids.tolist()
    assert vocab.t2d.sum() == 4 and vocab.target_to_draft[7] == 2


def test_bf16_autocast_loss_close_to_float32():
    from python_backend.training.ttt import batch_loss

    head, _, vocab, rng = heads([1, 3, 5])
    examples = [Example(rng.integers(0, VOCAB, LENGTH), rng.standard_normal((LENGTH, 3 * HIDDEN)).astype(np.float32),
                        answer_start=2) for _ in range(3)]
    batch = collate(examples, vocab, ttt_steps=3)
    with torch.no_grad():
        full, _, _ = batch_loss(head, batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            narrow, _, _ = batch_loss(head, batch)
    assert narrow.dtype == torch.float32
    assert abs(float(narrow) - float(full)) < 0.02 * abs(float(full))
