"""The numpy EAGLE-3 draft head: layout, loading, forward semantics, cache, vocab mapping.

A tiny random target config keeps it fast; nothing here reads the real SmolLM2 files.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from python_backend.reference.eagle3 import (
    Eagle3DraftModel,
    default_layers_to_capture,
    load_head_weights,
    make_random_head,
    read_safetensors,
    save_eagle3_head,
)

TARGET_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 64,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "intermediate_size": 128,
    "vocab_size": 100,
    "num_hidden_layers": 8,
    "rms_norm_eps": 1e-5,
    "rope_theta": 100000.0,
    "max_position_embeddings": 256,
}
HIDDEN = TARGET_CONFIG["hidden_size"]
NUM_LAYERS = TARGET_CONFIG["num_hidden_layers"]
DRAFT_VOCAB = 40


@pytest.fixture(scope="module")
def target_embed() -> np.ndarray:
    return np.random.default_rng(7).standard_normal((TARGET_CONFIG["vocab_size"], HIDDEN)).astype(np.float32)


def _randomize_norms(head_dir, seed: int = 3) -> None:
    """Non-unit norm weights, so a norm applied with the wrong weight (or not at all) shows."""
    config = json.loads((head_dir / "config.json").read_text())
    weights = load_head_weights(head_dir)
    rng = np.random.default_rng(seed)
    for key in list(weights):
        if key.endswith("norm.weight"):
            weights[key] = (1.0 + 0.5 * rng.standard_normal(weights[key].shape)).astype(np.float32)
    save_eagle3_head(head_dir, config, weights)


@pytest.fixture()
def head_dir(tmp_path):
    path = tmp_path / "head"
    make_random_head(path, TARGET_CONFIG, [1, 3, 4], DRAFT_VOCAB, seed=0)
    _randomize_norms(path)
    return path


@pytest.fixture()
def model(head_dir, target_embed) -> Eagle3DraftModel:
    return Eagle3DraftModel.from_pretrained(head_dir, target_embed, NUM_LAYERS)


def _random_rows(model: Eagle3DraftModel, count: int, seed: int):
    rng = np.random.default_rng(seed)
    token_ids = rng.integers(0, model.config.vocab_size, size=count)
    captured = rng.standard_normal((count, len(model.layers_to_capture) * HIDDEN)).astype(np.float32)
    return token_ids, model.fuse(captured)


# -- an independent, per-row float64 transcription of the architecture --------------------
def _rms(x, weight, eps):
    return x / np.sqrt(np.mean(x * x) + eps) * weight


def _reference_forward(weights: dict, config: dict, embed: np.ndarray, token_ids, features,
                       norm_before_residual: bool = False):
    """Logits and pre-norm hidden of every row, rows at positions 0..n-1, no cache."""
    w = {k: v.astype(np.float64) for k, v in weights.items() if v.dtype.kind == "f"}
    eps, theta = config["rms_norm_eps"], config["rope_theta"]
    heads, kv_heads, dim = config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]
    layer = "midlayer."
    qs, ks, vs, hidden_rows, logits_rows = [], [], [], [], []
    for position, (token, feature) in enumerate(zip(token_ids, features.astype(np.float64))):
        x = np.concatenate([_rms(embed[token].astype(np.float64), w[layer + "input_layernorm.weight"], eps),
                            _rms(feature, w[layer + "hidden_norm.weight"], eps)])
        rotated = []
        for name, count in (("q_proj", heads), ("k_proj", kv_heads)):
            projected = (w[f"{layer}self_attn.{name}.weight"] @ x).reshape(count, dim)
            out = np.empty_like(projected)
            for pair in range(dim // 2):
                angle = position * theta ** (-2.0 * pair / dim)
                a, b = projected[:, pair], projected[:, pair + dim // 2]
                out[:, pair] = a * math.cos(angle) - b * math.sin(angle)
                out[:, pair + dim // 2] = b * math.cos(angle) + a * math.sin(angle)
            rotated.append(out)
        qs.append(rotated[0])
        ks.append(rotated[1])
        vs.append((w[layer + "self_attn.v_proj.weight"] @ x).reshape(kv_heads, dim))
        head_outputs = []
        for head in range(heads):
            kv = head // (heads // kv_heads)
            scores = np.array([qs[-1][head] @ ks[j][kv] for j in range(position + 1)]) / math.sqrt(dim)
            attention = np.exp(scores - scores.max())
            attention /= attention.sum()
            head_outputs.append(sum(attention[j] * vs[j][kv] for j in range(position + 1)))
        residual = _rms(feature, w[layer + "hidden_norm.weight"], eps) if norm_before_residual else feature
        h = residual + w[layer + "self_attn.o_proj.weight"] @ np.concatenate(head_outputs)
        normed = _rms(h, w[layer + "post_attention_layernorm.weight"], eps)
        gate = w[layer + "mlp.gate_proj.weight"] @ normed
        h = h + w[layer + "mlp.down_proj.weight"] @ (gate / (1 + np.exp(-gate)) * (w[layer + "mlp.up_proj.weight"] @ normed))
        hidden_rows.append(h)
        logits_rows.append(w["lm_head.weight"] @ _rms(h, w["norm.weight"], eps))
    return np.array(logits_rows), np.array(hidden_rows)


# -- loading --------------------------------------------------------------------------------
def test_head_written_in_public_layout_and_loaded_back(head_dir, model):
    config = json.loads((head_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLMEagle3"]
    assert config["eagle_config"]["eagle_aux_hidden_state_layer_ids"] == [1, 3, 4]
    assert config["draft_vocab_size"] == DRAFT_VOCAB and config["target_hidden_size"] == HIDDEN
    saved = read_safetensors(head_dir / "model.safetensors")
    assert {"fc.weight", "norm.weight", "lm_head.weight", "d2t", "t2d",
            "midlayer.self_attn.q_proj.weight", "midlayer.hidden_norm.weight"} <= set(saved)
    assert saved["midlayer.self_attn.q_proj.weight"].shape == (4 * 16, 2 * HIDDEN)   # q/k/v take 2*hidden
    assert saved["fc.weight"].shape == (HIDDEN, 3 * HIDDEN)
    assert saved["d2t"].dtype == np.int64 and saved["t2d"].dtype == np.bool_
    assert "embed_tokens.weight" not in saved                                        # shares the target's

    assert model.layers_to_capture == [1, 3, 4]
    assert model.config.draft_vocab_size == DRAFT_VOCAB and model.config.head_dim == 16
    np.testing.assert_array_equal(model.fc, saved["fc.weight"])
    np.testing.assert_array_equal(model.o_proj, saved["midlayer.self_attn.o_proj.weight"])
    np.testing.assert_array_equal(model.lm_head, saved["lm_head.weight"])


def test_layers_dot_0_and_model_prefix_key_variants_load_to_the_same_model(head_dir, model, target_embed, tmp_path):
    config = json.loads((head_dir / "config.json").read_text())
    renamed = {("model.layers.0." + key[len("midlayer."):]) if key.startswith("midlayer.") else key: value
               for key, value in load_head_weights(head_dir).items()}
    assert any(key.startswith("model.layers.0.") for key in renamed)
    variant = save_eagle3_head(tmp_path / "variant", config, renamed)
    other = Eagle3DraftModel.from_pretrained(variant, target_embed, NUM_LAYERS)

    token_ids, features = _random_rows(model, 6, seed=1)
    expected, _ = model.forward([token_ids], [features], [model.new_cache()], [6])
    got, _ = other.forward([token_ids], [features], [other.new_cache()], [6])
    np.testing.assert_array_equal(got[0], expected[0])


def test_bfloat16_checkpoint_is_widened_to_float32(tmp_path):
    values = np.array([[1.0, -2.5], [0.15625, 3.0e-3]], dtype=np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype("<u2")
    header = json.dumps({"w": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, bf16.nbytes]}}).encode()
    path = tmp_path / "bf16.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + bf16.tobytes())
    loaded = read_safetensors(path)["w"]
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, (bf16.astype(np.uint32) << 16).view(np.float32))
    np.testing.assert_allclose(loaded, values, rtol=1e-2)


def test_missing_tensor_error_names_it(head_dir, target_embed, tmp_path):
    config = json.loads((head_dir / "config.json").read_text())
    weights = load_head_weights(head_dir)
    del weights["midlayer.self_attn.k_proj.weight"]
    broken = save_eagle3_head(tmp_path / "broken", config, weights)
    with pytest.raises(KeyError, match="midlayer.self_attn.k_proj.weight"):
        Eagle3DraftModel.from_pretrained(broken, target_embed, NUM_LAYERS)


def test_missing_fc_for_three_captured_layers_error_names_it(head_dir, target_embed, tmp_path):
    config = json.loads((head_dir / "config.json").read_text())
    weights = load_head_weights(head_dir)
    del weights["fc.weight"]
    broken = save_eagle3_head(tmp_path / "broken", config, weights)
    with pytest.raises(KeyError, match="fc.weight"):
        Eagle3DraftModel.from_pretrained(broken, target_embed, NUM_LAYERS)


def test_missing_config_field_error_names_it(head_dir, target_embed):
    config = json.loads((head_dir / "config.json").read_text())
    del config["intermediate_size"]
    (head_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="intermediate_size"):
        Eagle3DraftModel.from_pretrained(head_dir, target_embed, NUM_LAYERS)


def test_wrong_shape_error_names_tensor_and_shapes(head_dir, target_embed, tmp_path):
    config = json.loads((head_dir / "config.json").read_text())
    weights = load_head_weights(head_dir)
    weights["midlayer.mlp.up_proj.weight"] = weights["midlayer.mlp.up_proj.weight"][:, :10]
    broken = save_eagle3_head(tmp_path / "broken", config, weights)
    with pytest.raises(ValueError, match=r"midlayer.mlp.up_proj.weight.*\(128, 10\)"):
        Eagle3DraftModel.from_pretrained(broken, target_embed, NUM_LAYERS)


def test_own_embed_tokens_take_precedence_over_the_targets(head_dir, model, target_embed, tmp_path):
    config = json.loads((head_dir / "config.json").read_text())
    weights = load_head_weights(head_dir)
    own = np.random.default_rng(11).standard_normal(target_embed.shape).astype(np.float32)
    weights["embed_tokens.weight"] = own
    with_embed = Eagle3DraftModel.from_pretrained(save_eagle3_head(tmp_path / "own", config, weights),
                                                  target_embed, NUM_LAYERS)
    np.testing.assert_array_equal(with_embed.embed_tokens, own)
    np.testing.assert_array_equal(model.embed_tokens, target_embed)
    with pytest.raises(KeyError, match="embed_tokens.weight"):
        Eagle3DraftModel.from_pretrained(head_dir, None, NUM_LAYERS)


# -- captured layers ----------------------------------------------------------------------
def test_minus_one_config_captures_the_final_normed_state_without_fc(tmp_path, target_embed):
    head = make_random_head(tmp_path / "last", TARGET_CONFIG, [-1], DRAFT_VOCAB, seed=0)
    config = json.loads((head / "config.json").read_text())
    assert config["eagle_config"] == {"eagle_aux_hidden_state_layer_ids": [-1], "use_aux_hidden_state": False}
    assert "fc.weight" not in read_safetensors(head / "model.safetensors")
    model = Eagle3DraftModel.from_pretrained(head, target_embed, NUM_LAYERS)
    assert model.layers_to_capture == [-1]
    assert model.fc is None
    final_state = np.random.default_rng(0).standard_normal((3, HIDDEN)).astype(np.float32)
    np.testing.assert_array_equal(model.fuse(final_state), final_state)   # one same-width layer: no fc


def test_use_aux_hidden_state_false_without_ids_means_final_normed_state(tmp_path, target_embed):
    head = make_random_head(tmp_path / "last", TARGET_CONFIG, [-1], DRAFT_VOCAB, seed=0)
    config = json.loads((head / "config.json").read_text())
    config["eagle_config"] = {"use_aux_hidden_state": False}
    (head / "config.json").write_text(json.dumps(config))
    assert Eagle3DraftModel.from_pretrained(head, target_embed, NUM_LAYERS).layers_to_capture == [-1]


def test_no_layer_field_uses_tensorrt_llm_default(head_dir, target_embed):
    config = json.loads((head_dir / "config.json").read_text())
    del config["eagle_config"]
    (head_dir / "config.json").write_text(json.dumps(config))
    model = Eagle3DraftModel.from_pretrained(head_dir, target_embed, NUM_LAYERS)
    assert model.layers_to_capture == default_layers_to_capture(NUM_LAYERS) == [1, 3, 4]
    assert default_layers_to_capture(30) == [1, 14, 26]       # SmolLM2-135M
    assert default_layers_to_capture(1) == [0]
    with pytest.raises(ValueError, match="too few"):
        default_layers_to_capture(4)


def test_deployment_override_of_captured_layers_is_checked_against_fc(model):
    model.set_layers_to_capture([0, 5, 7])                 # same count: fc still fits
    assert model.layers_to_capture == [0, 5, 7]
    with pytest.raises(ValueError, match=r"fc.weight has shape \(64, 192\)"):
        model.set_layers_to_capture([0, 5])
    with pytest.raises(ValueError, match="not a layer"):
        model.set_layers_to_capture([0, 5, 8])
    with pytest.raises(ValueError, match="fuse expects"):
        model.fuse(np.zeros((2, 2 * HIDDEN), np.float32))


# -- forward ------------------------------------------------------------------------------
def test_forward_shapes_and_cache_growth(model):
    token_ids, features = _random_rows(model, 7, seed=2)
    cache = model.new_cache()
    logits, hidden = model.forward([token_ids], [features], [cache], [3])
    assert logits[0].shape == (3, DRAFT_VOCAB) and logits[0].dtype == np.float32
    assert hidden[0].shape == (7, HIDDEN) and hidden[0].dtype == np.float32
    assert cache.length == 7
    more_ids, more_features = _random_rows(model, 100, seed=3)     # past the initial capacity
    logits, hidden = model.forward([more_ids], [more_features], [cache], [0])
    assert logits[0].shape == (0, DRAFT_VOCAB) and cache.length == 107


def test_forward_matches_an_independent_per_row_transcription(head_dir, model, target_embed):
    config = json.loads((head_dir / "config.json").read_text())
    weights = load_head_weights(head_dir)
    token_ids, features = _random_rows(model, 9, seed=4)
    logits, hidden = model.forward([token_ids], [features], [model.new_cache()], [9])
    expected_logits, expected_hidden = _reference_forward(weights, config, target_embed, token_ids, features)
    np.testing.assert_allclose(hidden[0], expected_hidden, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(logits[0], expected_logits, rtol=1e-4, atol=1e-5)


def test_fuse_is_fc_over_the_captured_concatenation(model):
    captured = np.random.default_rng(5).standard_normal((4, 3 * HIDDEN)).astype(np.float32)
    np.testing.assert_allclose(model.fuse(captured), captured.astype(np.float64) @ model.fc.T.astype(np.float64),
                               rtol=1e-5, atol=1e-5)


def test_ragged_batch_equals_each_sequence_alone(model):
    rows = [_random_rows(model, count, seed=10 + count) for count in (5, 1, 8, 3)]
    num_logits = [2, 1, 8, 0]
    # the first sequence already has cached rows: positions differ per sequence
    primed = model.new_cache()
    prime_ids, prime_features = _random_rows(model, 4, seed=99)
    model.forward([prime_ids], [prime_features], [primed], [0])
    caches = [primed] + [model.new_cache() for _ in rows[1:]]
    batch_logits, batch_hidden = model.forward([r[0] for r in rows], [r[1] for r in rows], caches, num_logits)

    for index, (token_ids, features) in enumerate(rows):
        cache = model.new_cache()
        if index == 0:
            model.forward([prime_ids], [prime_features], [cache], [0])
        alone_logits, alone_hidden = model.forward([token_ids], [features], [cache], [num_logits[index]])
        np.testing.assert_allclose(batch_logits[index], alone_logits[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(batch_hidden[index], alone_hidden[0], rtol=1e-5, atol=1e-5)
        assert caches[index].length == cache.length


def test_chained_steps_with_cache_equal_recomputing_the_whole_sequence(model):
    """Catch-up rows, then chained rows fed their predecessor's hidden_out, as the engine drafts."""
    catchup_ids, catchup_features = _random_rows(model, 5, seed=20)
    cache = model.new_cache()
    logits, hidden = model.forward([catchup_ids], [catchup_features], [cache], [1])
    all_ids, all_features, step_logits = list(catchup_ids), [catchup_features], [logits[0][-1]]
    for _ in range(3):
        next_id = int(np.argmax(step_logits[-1]))          # greedy draft id used as the next token
        feature = hidden[0][-1:]
        logits, hidden = model.forward([np.array([next_id])], [feature], [cache], [1])
        all_ids.append(next_id)
        all_features.append(feature)
        step_logits.append(logits[0][-1])

    full_logits, full_hidden = model.forward([np.array(all_ids)], [np.concatenate(all_features)],
                                             [model.new_cache()], [len(all_ids)])
    np.testing.assert_allclose(np.array(step_logits), full_logits[0][4:], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(hidden[0], full_hidden[0][-1:], rtol=1e-5, atol=1e-5)


def test_truncate_then_reforward_reproduces_the_rolled_back_rows(model):
    token_ids, features = _random_rows(model, 8, seed=30)
    cache = model.new_cache()
    first_logits, first_hidden = model.forward([token_ids], [features], [cache], [8])
    cache.truncate(5)
    assert cache.length == 5
    again_logits, again_hidden = model.forward([token_ids[5:]], [features[5:]], [cache], [3])
    np.testing.assert_allclose(again_logits[0], first_logits[0][5:], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(again_hidden[0], first_hidden[0][5:], rtol=1e-5, atol=1e-6)

    # different rows after the rollback see only the kept prefix
    other_ids, other_features = _random_rows(model, 2, seed=31)
    cache.truncate(5)
    rolled_logits, _ = model.forward([other_ids], [other_features], [cache], [2])
    fresh_logits, _ = model.forward([np.concatenate([token_ids[:5], other_ids])],
                                    [np.concatenate([features[:5], other_features])], [model.new_cache()], [2])
    np.testing.assert_allclose(rolled_logits[0], fresh_logits[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="truncate"):
        cache.truncate(cache.length + 1)


@pytest.mark.parametrize("flag", ["norm_before_residual", "return_hidden_post_norm", "norm_before_fc"])
def test_published_variant_flags_change_what_they_name(flag, head_dir, model, target_embed, tmp_path):
    config = json.loads((head_dir / "config.json").read_text())
    weights = load_head_weights(head_dir)
    if flag == "norm_before_residual":
        config[flag] = True
    else:
        config["eagle_config"][flag] = True
    input_norm = (1.0 + 0.5 * np.random.default_rng(8).standard_normal(3 * HIDDEN)).astype(np.float32)
    if flag == "norm_before_fc":
        weights["input_norm.weight"] = input_norm
    variant = Eagle3DraftModel.from_pretrained(save_eagle3_head(tmp_path / flag, config, weights),
                                               target_embed, NUM_LAYERS)
    token_ids, features = _random_rows(model, 4, seed=40)
    logits, hidden = variant.forward([token_ids], [features], [variant.new_cache()], [4])
    base_logits, base_hidden = model.forward([token_ids], [features], [model.new_cache()], [4])
    eps = model.config.rms_norm_eps
    if flag == "norm_before_residual":
        expected_logits, expected_hidden = _reference_forward(weights, config, target_embed, token_ids, features,
                                                              norm_before_residual=True)
        assert not np.allclose(hidden[0], base_hidden[0], atol=1e-3)
        np.testing.assert_allclose(hidden[0], expected_hidden, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(logits[0], expected_logits, rtol=1e-4, atol=1e-5)
    elif flag == "return_hidden_post_norm":
        np.testing.assert_allclose(logits[0], base_logits[0], rtol=1e-6)
        expected = np.array([_rms(h.astype(np.float64), model.norm, eps) for h in base_hidden[0]])
        np.testing.assert_allclose(hidden[0], expected, rtol=1e-4, atol=1e-5)
    else:
        captured = np.random.default_rng(9).standard_normal((2, 3 * HIDDEN)).astype(np.float32)
        expected = np.array([_rms(c.astype(np.float64), input_norm, eps) for c in captured]) @ model.fc.T
        np.testing.assert_allclose(variant.fuse(captured), expected, rtol=1e-4, atol=1e-5)
        del weights["input_norm.weight"]
        with pytest.raises(KeyError, match="input_norm.weight"):
            Eagle3DraftModel.from_pretrained(save_eagle3_head(tmp_path / "no_norm", config, weights),
                                             target_embed, NUM_LAYERS)


# -- vocabularies -------------------------------------------------------------------------
def test_d2t_maps_draft_ids_to_the_most_frequent_target_ids(tmp_path, target_embed):
    counts = np.zeros(TARGET_CONFIG["vocab_size"], dtype=np.int64)
    frequent = np.array([97, 3, 50, 12, 64, 31])
    counts[frequent] = [600, 500, 400, 300, 200, 100]
    counts[[70, 20]] = 5                                     # equal counts: the lower id wins
    head = make_random_head(tmp_path / "vocab", TARGET_CONFIG, [1, 3, 4], 7, seed=0, token_counts=counts)
    model = Eagle3DraftModel.from_pretrained(head, target_embed, NUM_LAYERS)

    expected_targets = np.sort(np.append(frequent, 20))
    np.testing.assert_array_equal(model.draft_to_target(np.arange(7)), expected_targets)
    assert model.draft_to_target(np.array([6, 0])).tolist() == [97, 3]
    np.testing.assert_array_equal(np.flatnonzero(model.t2d), expected_targets)
    # draft probabilities land on their target ids, nowhere else
    draft_probs = np.full((1, 7), 1 / 7)
    lifted = model.draft_probs_to_target(draft_probs)
    assert lifted.shape == (1, TARGET_CONFIG["vocab_size"])
    np.testing.assert_allclose(lifted[0, expected_targets], 1 / 7)
    assert lifted.sum() == pytest.approx(1.0)


def test_default_draft_vocab_is_the_first_ids(model):
    np.testing.assert_array_equal(model.draft_to_target(np.arange(DRAFT_VOCAB)), np.arange(DRAFT_VOCAB))


def test_t2d_that_disagrees_with_d2t_is_refused(head_dir, target_embed, tmp_path):
    config = json.loads((head_dir / "config.json").read_text())
    weights = load_head_weights(head_dir)
    weights["t2d"] = np.roll(weights["t2d"], 1)
    with pytest.raises(ValueError, match="t2d disagrees with d2t"):
        Eagle3DraftModel.from_pretrained(save_eagle3_head(tmp_path / "bad", config, weights),
                                         target_embed, NUM_LAYERS)


# -- with the reference target ----------------------------------------------------------
def _write_tiny_target(folder, seed: int = 5):
    """A random HF-layout Llama with TARGET_CONFIG's shapes and tied embeddings."""
    config = dict(TARGET_CONFIG, model_type="llama", tie_word_embeddings=True)
    rng = np.random.default_rng(seed)
    hidden, ffn = config["hidden_size"], config["intermediate_size"]
    q_width, kv_width = config["num_attention_heads"] * config["head_dim"], config["num_key_value_heads"] * config["head_dim"]
    weights = {"model.embed_tokens.weight": rng.standard_normal((config["vocab_size"], hidden)),
               "model.norm.weight": 1.0 + 0.1 * rng.standard_normal(hidden)}
    for layer in range(config["num_hidden_layers"]):
        prefix = f"model.layers.{layer}."
        for name, shape in (("input_layernorm.weight", (hidden,)), ("post_attention_layernorm.weight", (hidden,)),
                            ("self_attn.q_proj.weight", (q_width, hidden)), ("self_attn.k_proj.weight", (kv_width, hidden)),
                            ("self_attn.v_proj.weight", (kv_width, hidden)), ("self_attn.o_proj.weight", (hidden, q_width)),
                            ("mlp.gate_proj.weight", (ffn, hidden)), ("mlp.up_proj.weight", (ffn, hidden)),
                            ("mlp.down_proj.weight", (hidden, ffn))):
            scale = 0.1 if name.endswith("proj.weight") else 1.0
            weights[prefix + name] = (1.0 if "norm" in name else 0.0) + scale * rng.standard_normal(shape)
    # a Llama checkpoint is the same two files: config.json + model.safetensors
    save_eagle3_head(folder, config, {k: v.astype(np.float32) for k, v in weights.items()})
    return folder


def test_minus_one_head_with_the_reference_target_reads_what_the_lm_head_reads(tmp_path):
    from python_backend.reference.llama import LlamaModel

    target = LlamaModel.from_pretrained(_write_tiny_target(tmp_path / "target"))
    head = make_random_head(tmp_path / "head", TARGET_CONFIG, [-1], DRAFT_VOCAB, seed=0)
    draft = Eagle3DraftModel.from_pretrained(head, target.embed_tokens, target.config.num_hidden_layers)
    prompt = np.array([5, 17, 42, 8, 99, 3])
    out = target.forward([prompt], [target.new_cache()], [len(prompt)], draft.layers_to_capture)
    captured = out.captured[0]
    assert captured.shape == (len(prompt), HIDDEN)
    # the final normed state is exactly what the (tied) LM head turns into logits
    np.testing.assert_allclose(captured @ target.embed_tokens.T, out.logits[0], rtol=1e-4, atol=1e-4)
    # alignment: draft row j = (x_{j+1}, f_j)
    logits, hidden = draft.forward([prompt[1:]], [draft.fuse(captured[:-1])], [draft.new_cache()], [1])
    assert logits[0].shape == (1, DRAFT_VOCAB) and hidden[0].shape == (len(prompt) - 1, HIDDEN)


def test_three_layer_head_fuses_the_reference_targets_captured_layers(tmp_path, head_dir):
    from python_backend.reference.llama import LlamaModel

    target = LlamaModel.from_pretrained(_write_tiny_target(tmp_path / "target"))
    draft = Eagle3DraftModel.from_pretrained(head_dir, target.embed_tokens, target.config.num_hidden_layers)
    prompt = np.array([1, 2, 3, 4])
    out = target.forward([prompt], [target.new_cache()], [1], draft.layers_to_capture)
    assert out.captured[0].shape == (len(prompt), 3 * HIDDEN)
    assert draft.fuse(out.captured[0]).shape == (len(prompt), HIDDEN)
