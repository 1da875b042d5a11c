"""The numpy Llama: what the speculative loop and the engine rely on, with the real SmolLM2 weights."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from python_backend.reference.checkpoint import CheckpointError, LlamaConfig, load_llama_checkpoint
from python_backend.reference.llama import GEMV_BLOCK_ROWS, LlamaModel, linear, rms_norm, rope_inverse_frequencies

# Same arithmetic, different matmul shapes (one row vs several): float32 rounding only.
LOGITS_TOLERANCE = dict(rtol=1e-4, atol=5e-4)


@pytest.fixture(scope="module")
def model(smollm2_dir) -> LlamaModel:
    return LlamaModel.from_pretrained(smollm2_dir)


@pytest.fixture(scope="module")
def prompt_ids(smollm2_dir) -> np.ndarray:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                        add_generation_prompt=True, tokenize=True, return_dict=False)
    return np.asarray(ids, dtype=np.int64)


def prefilled(model: LlamaModel, ids: np.ndarray):
    cache = model.new_cache()
    logits = model.forward([ids], [cache], [1]).logits[0]
    return cache, logits


def test_greedy_answer_to_capital_of_france_mentions_paris(smollm2_dir, model, prompt_ids):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    cache, logits = prefilled(model, prompt_ids)
    generated = []
    for _ in range(16):
        next_id = int(logits[-1].argmax())
        if next_id == tokenizer.eos_token_id:
            break
        generated.append(next_id)
        logits = model.forward([np.array([next_id])], [cache], [1]).logits[0]
    answer = tokenizer.decode(generated)
    assert "Paris" in answer, answer
    assert cache.length == len(prompt_ids) + len(generated)


def test_verification_pass_equals_sequential_decode_steps(model, prompt_ids):
    draft = np.array([504, 3575, 282, 4649])          # "The capital of France"
    verify_cache, _ = prefilled(model, prompt_ids)
    verified = model.forward([draft], [verify_cache], [len(draft)]).logits[0]

    step_cache, _ = prefilled(model, prompt_ids)
    stepped = np.concatenate([model.forward([draft[i:i + 1]], [step_cache], [1]).logits[0]
                              for i in range(len(draft))])
    assert verified.shape == (len(draft), model.config.vocab_size)
    np.testing.assert_allclose(verified, stepped, **LOGITS_TOLERANCE)
    assert verify_cache.length == step_cache.length == len(prompt_ids) + len(draft)


def test_truncate_rolls_back_rejected_drafts_so_reforward_gives_same_logits(model, prompt_ids):
    cache, _ = prefilled(model, prompt_ids)
    accepted = np.array([504, 3575])
    first = model.forward([accepted], [cache], [2]).logits[0]

    cache.truncate(len(prompt_ids))
    rejected = np.array([17, 18, 19, 20, 21])            # a wrong guess written into the cache ...
    model.forward([rejected], [cache], [1])
    cache.truncate(len(prompt_ids))                       # ... and rolled back
    again = model.forward([accepted], [cache], [2]).logits[0]

    np.testing.assert_array_equal(first, again)
    assert cache.length == len(prompt_ids) + 2


def test_ragged_batch_equals_each_sequence_alone(model, prompt_ids):
    rng = np.random.default_rng(7)
    pasts = [prompt_ids, rng.integers(100, 40000, 5), rng.integers(100, 40000, 12)]
    news = [rng.integers(100, 40000, 1), rng.integers(100, 40000, 4), rng.integers(100, 40000, 9)]
    num_logits = [1, 4, 2]
    capture = [3, -1]

    batch_caches = [prefilled(model, past)[0] for past in pasts]
    batched = model.forward(news, batch_caches, num_logits, capture)
    for i, (past, new) in enumerate(zip(pasts, news)):
        alone_cache, _ = prefilled(model, past)
        alone = model.forward([new], [alone_cache], [num_logits[i]], capture)
        assert batched.logits[i].shape == (num_logits[i], model.config.vocab_size)
        np.testing.assert_allclose(batched.logits[i], alone.logits[0], **LOGITS_TOLERANCE)
        np.testing.assert_allclose(batched.captured[i], alone.captured[0], rtol=1e-4, atol=1e-4)
        assert batch_caches[i].length == len(past) + len(new)


def test_prefill_in_pieces_equals_prefill_at_once(model, prompt_ids):
    whole_cache, whole = prefilled(model, prompt_ids)
    pieces_cache = model.new_cache()
    model.forward([prompt_ids[:20]], [pieces_cache], [0])
    pieces = model.forward([prompt_ids[20:]], [pieces_cache], [1]).logits[0]
    np.testing.assert_allclose(pieces, whole, **LOGITS_TOLERANCE)


def test_logits_only_for_the_trailing_rows_asked_for(model, prompt_ids):
    out = model.forward([prompt_ids, prompt_ids[:6]], [model.new_cache(), model.new_cache()], [3, 0])
    assert out.logits[0].shape == (3, model.config.vocab_size)
    assert out.logits[1].shape == (0, model.config.vocab_size)
    assert out.captured is None
    _, last_only = prefilled(model, prompt_ids)
    np.testing.assert_allclose(out.logits[0][-1:], last_only, **LOGITS_TOLERANCE)


def test_cache_grows_with_tokens_used_and_stays_below_twice_the_length(model):
    cache = model.new_cache()
    assert cache.capacity == 0 and cache.nbytes == 0
    model.forward([np.arange(100, 105)], [cache], [1])
    for step in range(40):
        model.forward([np.array([200 + step])], [cache], [1])
        assert cache.length <= cache.capacity < 2 * cache.length
    per_position_bytes = 2 * model.config.num_hidden_layers * model.config.num_key_value_heads \
        * model.config.head_dim * 4
    assert cache.nbytes == cache.capacity * per_position_bytes


def test_captured_final_state_is_the_normed_state_the_lm_head_reads(model, prompt_ids):
    last_layer = model.config.num_hidden_layers - 1
    out = model.forward([prompt_ids], [model.new_cache()], [len(prompt_ids)], capture_layers=[-1, last_layer])
    hidden = model.config.hidden_size
    final_state, last_layer_state = out.captured[0][:, :hidden], out.captured[0][:, hidden:]
    np.testing.assert_allclose(final_state, rms_norm(last_layer_state, model.norm, model.config.rms_norm_eps),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(final_state @ model.embed_tokens.T, out.logits[0], **LOGITS_TOLERANCE)


def test_capturing_three_layers_concatenates_them_in_order(model, prompt_ids):
    layers = [1, 14, 26]                          # TensorRT-LLM's default EAGLE-3 picks for 30 layers
    three = model.forward([prompt_ids], [model.new_cache()], [1], capture_layers=layers).captured[0]
    middle = model.forward([prompt_ids], [model.new_cache()], [1], capture_layers=[14]).captured[0]
    hidden = model.config.hidden_size
    assert three.shape == (len(prompt_ids), 3 * hidden)
    np.testing.assert_array_equal(three[:, hidden:2 * hidden], middle)


def test_bad_batches_are_refused_naming_the_problem(model):
    cache = model.new_cache()
    with pytest.raises(ValueError, match=r"num_logits\[0\] must be 0..2"):
        model.forward([np.array([5, 6])], [cache], [3])
    with pytest.raises(ValueError, match="token id 49152 is outside the vocabulary"):
        model.forward([np.array([49152])], [cache], [1])
    with pytest.raises(ValueError, match="capture layer 30"):
        model.forward([np.array([5])], [cache], [1], capture_layers=[30])
    with pytest.raises(ValueError, match="truncate length must be 0..0"):
        cache.truncate(1)
    assert cache.length == 0                       # refused calls leave the cache as it was


# ---------------------------------------------------------------- checkpoint loading

TINY_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32, "hidden_size": 16,
    "intermediate_size": 24, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False, "eos_token_id": [3, 4],
}


def tiny_tensors(config: dict, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    hidden, ffn, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    head_dim = hidden // config["num_attention_heads"]
    kv_width = config["num_key_value_heads"] * head_dim

    def random(*shape):
        return rng.standard_normal(shape).astype(np.float32) * 0.2

    tensors = {"model.embed_tokens.weight": random(vocab, hidden), "model.norm.weight": 1 + random(hidden),
               "lm_head.weight": random(vocab, hidden)}
    for layer in range(config["num_hidden_layers"]):
        prefix = f"model.layers.{layer}."
        tensors.update({
            prefix + "input_layernorm.weight": 1 + random(hidden),
            prefix + "self_attn.q_proj.weight": random(hidden, hidden),
            prefix + "self_attn.k_proj.weight": random(kv_width, hidden),
            prefix + "self_attn.v_proj.weight": random(kv_width, hidden),
            prefix + "self_attn.o_proj.weight": random(hidden, hidden),
            prefix + "post_attention_layernorm.weight": 1 + random(hidden),
            prefix + "mlp.gate_proj.weight": random(ffn, hidden),
            prefix + "mlp.up_proj.weight": random(ffn, hidden),
            prefix + "mlp.down_proj.weight": random(hidden, ffn),
        })
    return tensors


def write_checkpoint(folder, config: dict, tensors: dict[str, np.ndarray]):
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    save_file(tensors, str(folder / "model.safetensors"))
    return folder


def test_loader_rejects_a_folder_missing_a_tensor_naming_it(tmp_path):
    tensors = tiny_tensors(TINY_CONFIG)
    del tensors["model.layers.1.mlp.up_proj.weight"]
    folder = write_checkpoint(tmp_path / "tiny", TINY_CONFIG, tensors)
    with pytest.raises(CheckpointError, match=r"model\.layers\.1\.mlp\.up_proj\.weight is missing"):
        LlamaModel.from_pretrained(folder)


def test_loader_names_missing_files_fields_and_wrong_shapes(tmp_path):
    with pytest.raises(CheckpointError, match="config.json is missing"):
        load_llama_checkpoint(tmp_path)
    config = {key: value for key, value in TINY_CONFIG.items() if key != "intermediate_size"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="field 'intermediate_size' is missing"):
        load_llama_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(TINY_CONFIG))
    with pytest.raises(CheckpointError, match="neither model.safetensors nor model.safetensors.index.json"):
        load_llama_checkpoint(tmp_path)
    tensors = tiny_tensors(TINY_CONFIG)
    tensors["model.norm.weight"] = tensors["model.norm.weight"][:-1]
    write_checkpoint(tmp_path, TINY_CONFIG, tensors)
    with pytest.raises(CheckpointError, match=r"model\.norm\.weight has shape \(15,\), config.json implies \(16,\)"):
        load_llama_checkpoint(tmp_path)


def test_sharded_and_bf16_checkpoints_load_like_the_single_file(tmp_path):
    from safetensors.numpy import save_file

    tensors = tiny_tensors(TINY_CONFIG)
    single = LlamaModel.from_pretrained(write_checkpoint(tmp_path / "single", TINY_CONFIG, tensors))

    sharded_dir = tmp_path / "sharded"
    sharded_dir.mkdir()
    (sharded_dir / "config.json").write_text(json.dumps(TINY_CONFIG))
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for filename, shard_names in shards.items():
        save_file({name: tensors[name] for name in shard_names}, str(sharded_dir / filename))
    weight_map = {name: filename for filename, shard_names in shards.items() for name in shard_names}
    (sharded_dir / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    sharded = LlamaModel.from_pretrained(sharded_dir)

    ids = np.array([1, 5, 9, 30])
    expected = single.forward([ids], [single.new_cache()], [4]).logits[0]
    np.testing.assert_array_equal(sharded.forward([ids], [sharded.new_cache()], [4]).logits[0], expected)

    # bf16: the top 16 bits of each float32; write those bits by hand (numpy has no bfloat16)
    bf16_dir = tmp_path / "bf16"
    write_checkpoint(bf16_dir, TINY_CONFIG, {"placeholder": np.zeros(1, np.float32)})
    header, blobs, offset = {}, [], 0
    for name, array in tensors.items():
        blob = (np.ascontiguousarray(array).view(np.uint32) >> 16).astype("<u2").tobytes()
        header[name] = {"dtype": "BF16", "shape": list(array.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    header_bytes = json.dumps(header).encode()
    (bf16_dir / "model.safetensors").write_bytes(
        len(header_bytes).to_bytes(8, "little") + header_bytes + b"".join(blobs))
    _, bf16_weights = load_llama_checkpoint(bf16_dir)
    truncated = (tensors["lm_head.weight"].view(np.uint32) & 0xFFFF0000).view(np.float32)
    np.testing.assert_array_equal(bf16_weights.lm_head, truncated)


def test_untied_checkpoint_uses_its_own_lm_head(tmp_path):
    tensors = tiny_tensors(TINY_CONFIG)
    model = LlamaModel.from_pretrained(write_checkpoint(tmp_path / "untied", TINY_CONFIG, tensors))
    out = model.forward([np.array([2, 7, 11])], [model.new_cache()], [3], capture_layers=[-1])
    np.testing.assert_allclose(out.logits[0], out.captured[0] @ tensors["lm_head.weight"].T, rtol=1e-5, atol=1e-5)
    assert model.config.eos_token_ids == (3, 4) and model.config.eos_token_id == 3


def test_config_reads_transformers_5_rope_parameters_and_llama3_scaling():
    raw = dict(TINY_CONFIG, rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                             "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                             "original_max_position_embeddings": 8192})
    config = LlamaConfig.from_dict(raw)
    assert config.rope_theta == 500000.0 and config.rope_type == "llama3"
    unscaled = LlamaConfig.from_dict(dict(TINY_CONFIG, head_dim=128, rope_theta=500000.0))
    scaled = rope_inverse_frequencies(dataclasses.replace(config, head_dim=128))
    plain = rope_inverse_frequencies(unscaled)
    assert scaled[0] == plain[0]                       # short wavelengths kept
    assert scaled[-1] == pytest.approx(plain[-1] / 8)  # long wavelengths stretched by the factor
    with pytest.raises(CheckpointError, match="rope type 'yarn' is not supported"):
        LlamaConfig.from_dict(dict(TINY_CONFIG, rope_scaling={"type": "yarn", "factor": 4.0}))


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 16])
def test_linear_agrees_with_the_plain_matmul_for_every_row_count(rows):
    rng = np.random.default_rng(rows)
    weight = rng.standard_normal((GEMV_BLOCK_ROWS + 123, 64)).astype(np.float32)   # a partial last block
    x = rng.standard_normal((rows, 64)).astype(np.float32)
    out = linear(x, weight)
    assert out.shape == (rows, weight.shape[0]) and out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out, x.astype(np.float64) @ weight.T.astype(np.float64), rtol=1e-4, atol=1e-4)
