"""Reading a Hugging Face LlamaForCausalLM folder: config.json and safetensors weights.

Returns plain float32 numpy arrays under HF's names and orientation ((out, in) for linear
layers); arranging them for fast arithmetic is the model's job (`llama.py`). Errors name
the folder and the missing file, field or tensor.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CONFIG_FILENAME = "config.json"
SAFETENSORS_FILENAME = "model.safetensors"
SAFETENSORS_INDEX_FILENAME = "model.safetensors.index.json"

# safetensors dtype -> numpy dtype of the stored little-endian values. BF16 is read as its
# raw 16 bits: numpy has no bfloat16 (safetensors' own numpy reader refuses such files).
_STORED_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
}


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded; the message names the file, field or tensor."""


@dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    # HF's rope_scaling / rope_parameters without rope_theta: {"rope_type": "default" | "linear" | "llama3", ...}
    rope_scaling: dict[str, Any] = field(default_factory=lambda: {"rope_type": "default"})
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()

    @property
    def eos_token_id(self) -> int | None:
        """The first end-of-sequence id (HF configs may list several)."""
        return self.eos_token_ids[0] if self.eos_token_ids else None

    @property
    def rope_type(self) -> str:
        return self.rope_scaling.get("rope_type", "default")

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = CONFIG_FILENAME) -> "LlamaConfig":
        def required(name: str) -> Any:
            if name not in raw:
                raise CheckpointError(f"{source}: field {name!r} is missing")
            return raw[name]

        hidden_size = int(required("hidden_size"))
        num_attention_heads = int(required("num_attention_heads"))
        if raw.get("hidden_act", "silu") != "silu":
            raise CheckpointError(f"{source}: hidden_act {raw['hidden_act']!r} is not supported (only silu)")
        for bias_field in ("attention_bias", "mlp_bias"):
            if raw.get(bias_field):
                raise CheckpointError(f"{source}: {bias_field}=true is not supported (Llama has no biases)")

        # transformers 5 writes `rope_parameters` (theta inside); 4.x writes rope_theta + rope_scaling.
        rope_scaling = dict(raw.get("rope_parameters") or raw.get("rope_scaling") or {})
        rope_theta = float(rope_scaling.pop("rope_theta", raw.get("rope_theta", 10000.0)))
        rope_scaling["rope_type"] = rope_scaling.pop("type", None) or rope_scaling.get("rope_type", "default")
        if rope_scaling["rope_type"] not in ("default", "linear", "llama3"):
            raise CheckpointError(f"{source}: rope type {rope_scaling['rope_type']!r} is not supported "
                                  f"(default, linear, llama3)")

        eos = raw.get("eos_token_id")
        eos_token_ids = () if eos is None else tuple(int(i) for i in (eos if isinstance(eos, list) else [eos]))
        return cls(
            vocab_size=int(required("vocab_size")),
            hidden_size=hidden_size,
            intermediate_size=int(required("intermediate_size")),
            num_hidden_layers=int(required("num_hidden_layers")),
            num_attention_heads=num_attention_heads,
            num_key_value_heads=int(raw.get("num_key_value_heads") or num_attention_heads),
            head_dim=int(raw.get("head_dim") or hidden_size // num_attention_heads),
            rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
            rope_theta=rope_theta,
            rope_scaling=rope_scaling,
            max_position_embeddings=int(raw.get("max_position_embeddings", 2048)),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            bos_token_id=None if raw.get("bos_token_id") is None else int(raw["bos_token_id"]),
            eos_token_ids=eos_token_ids,
        )

    @classmethod
    def from_json(cls, path: str | Path) -> "LlamaConfig":
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise CheckpointError(f"{path} is missing: a Hugging Face checkpoint folder needs {CONFIG_FILENAME}") from None
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{path} is not valid JSON: {err}") from None
        return cls.from_dict(raw, source=str(path))


@dataclass
class LlamaLayerWeights:
    """One decoder layer, HF orientation: linear weights are (out_features, in_features)."""

    input_layernorm: np.ndarray
    q_proj: np.ndarray
    k_proj: np.ndarray
    v_proj: np.ndarray
    o_proj: np.ndarray
    post_attention_layernorm: np.ndarray
    gate_proj: np.ndarray
    up_proj: np.ndarray
    down_proj: np.ndarray


@dataclass
class LlamaWeights:
    embed_tokens: np.ndarray                 # (vocab, hidden)
    layers: list[LlamaLayerWeights]
    norm: np.ndarray                         # (hidden,)
    lm_head: np.ndarray | None               # (vocab, hidden); None when tied to embed_tokens


# ---------------------------------------------------------------- safetensors

def read_safetensors(path: str | Path, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Tensors of one .safetensors file as float32 arrays (F32 ones are zero-copy, read-only maps)."""
    path = Path(path)
    with path.open("rb") as handle:
        header_length = struct.unpack("<Q", handle.read(8))[0]
        header = json.loads(handle.read(header_length))
    header.pop("__metadata__", None)
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_length)
    tensors = {}
    for name in header if names is None else names:
        entry = header.get(name)
        if entry is None:
            raise CheckpointError(f"{path}: tensor {name} is missing")
        stored_dtype = _STORED_DTYPES.get(entry["dtype"])
        if stored_dtype is None:
            raise CheckpointError(f"{path}: tensor {name} has dtype {entry['dtype']}; "
                                  f"supported: {', '.join(_STORED_DTYPES)}")
        start, end = entry["data_offsets"]
        stored = data[start:end].view(stored_dtype).reshape(entry["shape"])
        if entry["dtype"] == "BF16":
            tensors[name] = (stored.astype(np.uint32) << 16).view(np.float32)
        else:
            tensors[name] = stored.astype(np.float32, copy=False)
    return tensors


def _tensor_files(folder: Path) -> dict[str, Path]:
    """Tensor name -> the file holding it (one file, or shards listed by the index)."""
    single = folder / SAFETENSORS_FILENAME
    index = folder / SAFETENSORS_INDEX_FILENAME
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index}: field 'weight_map' is missing")
        files = {name: folder / filename for name, filename in weight_map.items()}
        for shard in sorted(set(files.values())):
            if not shard.is_file():
                raise CheckpointError(f"{shard} is missing (listed in {index.name})")
        return files
    if single.is_file():
        with single.open("rb") as handle:
            header_length = struct.unpack("<Q", handle.read(8))[0]
            names = json.loads(handle.read(header_length)).keys()
        return {name: single for name in names if name != "__metadata__"}
    raise CheckpointError(f"{folder} holds neither {SAFETENSORS_FILENAME} nor {SAFETENSORS_INDEX_FILENAME}")


def load_tensors(folder: str | Path, names: list[str]) -> dict[str, np.ndarray]:
    """The named tensors of a checkpoint folder, single-file or sharded, as float32 arrays."""
    folder = Path(folder)
    files = _tensor_files(folder)
    missing = [name for name in names if name not in files]
    if missing:
        shown = ", ".join(missing[:5]) + (f" (and {len(missing) - 5} more)" if len(missing) > 5 else "")
        raise CheckpointError(f"{folder}: tensor {shown} is missing from the checkpoint")
    by_file: dict[Path, list[str]] = {}
    for name in names:
        by_file.setdefault(files[name], []).append(name)
    tensors = {}
    for path, file_names in by_file.items():
        tensors.update(read_safetensors(path, file_names))
    return tensors


def tensor_names(folder: str | Path) -> set[str]:
    return set(_tensor_files(Path(folder)))


# ---------------------------------------------------------------- Llama

def _check_shape(folder: Path, name: str, array: np.ndarray, expected: tuple[int, ...]) -> None:
    if array.shape != expected:
        raise CheckpointError(f"{folder}: tensor {name} has shape {tuple(array.shape)}, "
                              f"{CONFIG_FILENAME} implies {expected}")


def load_llama_checkpoint(folder: str | Path) -> tuple[LlamaConfig, LlamaWeights]:
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {folder} does not exist")
    config = LlamaConfig.from_json(folder / CONFIG_FILENAME)
    hidden, q_width = config.hidden_size, config.num_attention_heads * config.head_dim
    kv_width, ffn = config.num_key_value_heads * config.head_dim, config.intermediate_size

    layer_shapes = {
        "input_layernorm": ("input_layernorm.weight", (hidden,)),
        "q_proj": ("self_attn.q_proj.weight", (q_width, hidden)),
        "k_proj": ("self_attn.k_proj.weight", (kv_width, hidden)),
        "v_proj": ("self_attn.v_proj.weight", (kv_width, hidden)),
        "o_proj": ("self_attn.o_proj.weight", (hidden, q_width)),
        "post_attention_layernorm": ("post_attention_layernorm.weight", (hidden,)),
        "gate_proj": ("mlp.gate_proj.weight", (ffn, hidden)),
        "up_proj": ("mlp.up_proj.weight", (ffn, hidden)),
        "down_proj": ("mlp.down_proj.weight", (hidden, ffn)),
    }
    expected = {"model.embed_tokens.weight": (config.vocab_size, hidden), "model.norm.weight": (hidden,)}
    for layer in range(config.num_hidden_layers):
        for name, shape in layer_shapes.values():
            expected[f"model.layers.{layer}.{name}"] = shape
    # Like transformers: with tied embeddings a stored lm_head is ignored; untied, it must be there.
    if not config.tie_word_embeddings:
        expected["lm_head.weight"] = (config.vocab_size, hidden)

    tensors = load_tensors(folder, list(expected))
    for name, shape in expected.items():
        _check_shape(folder, name, tensors[name], shape)
    layers = [
        LlamaLayerWeights(**{field_name: tensors[f"model.layers.{layer}.{name}"]
                             for field_name, (name, _) in layer_shapes.items()})
        for layer in range(config.num_hidden_layers)
    ]
    return config, LlamaWeights(
        embed_tokens=tensors["model.embed_tokens.weight"],
        layers=layers,
        norm=tensors["model.norm.weight"],
        lm_head=tensors.get("lm_head.weight"),
    )
