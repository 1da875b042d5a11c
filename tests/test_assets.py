"""`triton-eagle assets`: the packaged GGUF becomes a checkpoint folder transformers and our engine read."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from triton_eagle import assets


@pytest.fixture(scope="module")
def gguf_reader():
    from gguf import GGUFReader

    return GGUFReader(str(assets.packaged_gguf_path()))


@pytest.fixture()
def tokenizer(smollm2_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


def test_checkpoint_folder_holds_every_file(smollm2_dir):
    assert smollm2_dir.name == "SmolLM2-135M-Instruct"
    for name in assets.CHECKPOINT_FILES:
        assert (smollm2_dir / name).stat().st_size > 0, name


def test_tokenizer_loads_offline_and_renders_chatml(tokenizer):
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                         add_generation_prompt=True)
    assert text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=True,
                                        add_generation_prompt=True, return_dict=False)
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>") == 1
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("<|im_end|>", 2)
    assert tokenizer.pad_token_id == 2 and tokenizer.bos_token_id == 1


def test_hello_world_encodes_to_the_gguf_vocabulary(tokenizer, gguf_reader):
    gguf_tokens = gguf_reader.fields["tokenizer.ggml.tokens"].contents()
    ids = tokenizer.encode("Hello world")
    assert [gguf_tokens[i] for i in ids] == ["Hello", "\u0120world"]   # \u0120 = byte-level space
    assert tokenizer.decode(ids) == "Hello world"


def test_digits_are_split_one_by_one_like_llama_cpp_smollm(tokenizer):
    ids = tokenizer.encode("in 2024")
    assert tokenizer.convert_ids_to_tokens(ids) == ["in", "\u0120", "2", "0", "2", "4"]


def test_text_round_trips_through_the_byte_level_vocabulary(tokenizer):
    text = "Größe: 5 € — naïve café 😀\n\tcode()  "
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_config_describes_the_gguf_model(smollm2_dir, gguf_reader):
    from transformers import AutoConfig

    config = json.loads((smollm2_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (config["num_hidden_layers"], config["hidden_size"], config["intermediate_size"]) == (30, 576, 1536)
    assert (config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]) == (9, 3, 64)
    assert config["rope_theta"] == 100000.0 and config["rms_norm_eps"] == 1e-5
    assert config["tie_word_embeddings"] is True and config["vocab_size"] == 49152
    assert config["eos_token_id"] == 2
    assert AutoConfig.from_pretrained(smollm2_dir).num_key_value_heads == 3


def test_weights_are_float32_under_hf_names_with_tied_embeddings(smollm2_dir):
    from safetensors import safe_open

    with safe_open(smollm2_dir / "model.safetensors", framework="numpy") as weights:
        names = set(weights.keys())
        embed = weights.get_tensor("model.embed_tokens.weight")
        q_proj = weights.get_tensor("model.layers.29.self_attn.q_proj.weight")
    assert len(names) == 2 + 30 * 9 and "lm_head.weight" not in names
    assert {"model.norm.weight", "model.layers.0.mlp.gate_proj.weight",
            "model.layers.0.post_attention_layernorm.weight"} <= names
    assert embed.dtype == np.float32 and embed.shape == (49152, 576)
    assert q_proj.shape == (576, 576)


def test_rope_rows_return_to_rotate_half_order():
    # llama.cpp's converter permutes each head's HF rows (2, head_dim/2) -> (head_dim/2, 2)
    num_heads, head_dim, columns = 3, 8, 5
    hf_rows = np.arange(num_heads * head_dim * columns, dtype=np.float32).reshape(num_heads * head_dim, columns)
    gguf_rows = (hf_rows.reshape(num_heads, 2, head_dim // 2, columns).swapaxes(1, 2)
                 .reshape(num_heads * head_dim, columns))
    np.testing.assert_array_equal(assets.unpermute_rope_rows(gguf_rows, num_heads), hf_rows)


def test_second_run_leaves_a_complete_folder_alone(smollm2_dir, capsys):
    before = (smollm2_dir / "model.safetensors").stat().st_mtime_ns
    assert assets.run(argparse.Namespace(out=str(smollm2_dir.parent), force=False)) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert (smollm2_dir / "model.safetensors").stat().st_mtime_ns == before


def test_interrupted_conversion_is_replaced_by_a_complete_folder(tmp_path, smollm2_dir):
    checkpoint_dir = tmp_path / assets.CHECKPOINT_NAME
    checkpoint_dir.mkdir()
    (checkpoint_dir / "tokenizer.json").write_text("{}")      # what a killed earlier run might leave
    assert assets.convert_gguf(assets.packaged_gguf_path(), checkpoint_dir) is True
    assert assets.is_complete(checkpoint_dir)
    assert (checkpoint_dir / "tokenizer.json").read_bytes() == (smollm2_dir / "tokenizer.json").read_bytes()
    assert sorted(path.name for path in tmp_path.iterdir()) == [assets.CHECKPOINT_NAME]
