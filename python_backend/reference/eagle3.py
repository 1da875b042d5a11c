"""EAGLE-3 draft head in numpy (float32), in the public `LlamaForCausalLMEagle3` layout.

One Llama decoder layer drafts from the target's captured hidden states:

    feature  = fc(concat(captured layers))                 (n, hidden)   "fuse"
    x        = [input_layernorm(embed(token)) ; hidden_norm(feature)]     (n, 2*hidden)
    h        = feature + o_proj(attention(q/k/v_proj(x)))   q/k/v take 2*hidden
    h        = h + mlp(post_attention_layernorm(h))         SwiGLU
    logits   = lm_head(norm(h))                             over the draft vocab
    target id of draft id d = d + d2t[d]

`h` (before the final norm) is `hidden_out`: the feature of the next chained draft step.

Alignment (the engine and training must agree): target position j (token x_j) gives
feature f_j; draft row j takes (embed(x_{j+1}), fuse(f_j)) at rope position j and predicts
x_{j+2}. A sequence's draft KV cache holds one row per position, so a row's rope position
is the cache length when it is appended.

Checkpoint layout (what SpecForge writes and sglang / vLLM / TensorRT-LLM load): config.json
with the Llama fields plus `draft_vocab_size`, `target_hidden_size` and
`eagle_config.eagle_aux_hidden_state_layer_ids`; model.safetensors with `fc.weight`,
`midlayer.*` (also read as `layers.0.*`), `norm.weight`, `lm_head.weight`, `d2t`, `t2d` and
optionally `embed_tokens.weight` (else the target's embedding is shared).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .fast_linear import quantized_linear
from .llama import linear

ARCHITECTURE = "LlamaForCausalLMEagle3"
# Other names the same single-layer Llama head is published under.
ACCEPTED_ARCHITECTURES = (ARCHITECTURE, "Eagle3LlamaForCausalLM", "EAGLE3LlamaForCausalLM")
# -1 = the target's final hidden state after its final norm (TensorRT-LLM's convention,
# used by nvidia/gpt-oss-120b-Eagle3-v2 with `eagle3_layers_to_capture: [-1]`).
FINAL_NORMED_STATE = -1

LAYER_PREFIX = "midlayer."
LAYER_KEYS = (
    "input_layernorm.weight",
    "hidden_norm.weight",
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
    "post_attention_layernorm.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
)


# -- configuration ----------------------------------------------------------------------
@dataclass(frozen=True)
class Eagle3Config:
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int                  # the target's vocabulary
    draft_vocab_size: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    target_hidden_size: int
    # Target layers as the head config names them (None: not given, use the default).
    # Index i >= 0 = output of target decoder layer i (SpecForge / sglang / TensorRT-LLM
    # `eagle3_layers_to_capture`); -1 = the final normed state.
    aux_hidden_state_layer_ids: tuple[int, ...] | None
    norm_before_fc: bool             # RMSNorm (`input_norm.weight`) over the captured concat before fc
    norm_before_residual: bool       # residual = hidden_norm(feature) instead of feature (vLLM speculators)
    return_hidden_post_norm: bool    # hidden_out after the final norm (TensorRT-LLM eagle_config)
    tie_word_embeddings: bool

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config.json") -> "Eagle3Config":
        def need(name: str):
            if name not in raw or raw[name] is None:
                raise ValueError(f"{source}: missing field {name!r} (an EAGLE-3 head config needs it)")
            return raw[name]

        eagle_config = raw.get("eagle_config") or {}
        hidden_size = int(need("hidden_size"))
        num_heads = int(need("num_attention_heads"))
        num_layers = int(raw.get("num_hidden_layers", 1))
        if num_layers != 1:
            raise ValueError(f"{source}: num_hidden_layers must be 1 (one draft decoder layer), got {num_layers}")
        if raw.get("hidden_act", "silu") != "silu":
            raise ValueError(f"{source}: hidden_act must be 'silu', got {raw['hidden_act']!r}")
        for flag in ("attention_bias", "mlp_bias"):
            if raw.get(flag):
                raise ValueError(f"{source}: {flag}=true is not supported by the reference head")
        rope_scaling = raw.get("rope_scaling")
        if rope_scaling and rope_scaling.get("rope_type", rope_scaling.get("type")) != "default":
            raise ValueError(f"{source}: rope_scaling {rope_scaling!r} is not supported (only plain RoPE)")
        layer_ids = eagle_config.get("eagle_aux_hidden_state_layer_ids",
                                     raw.get("eagle_aux_hidden_state_layer_ids"))
        if layer_ids is None and eagle_config.get("use_aux_hidden_state") is False:
            # vLLM's switch for heads fed only the target's final (normed) hidden state
            layer_ids = [FINAL_NORMED_STATE]
        vocab_size = int(need("vocab_size"))
        return cls(
            hidden_size=hidden_size,
            num_attention_heads=num_heads,
            num_key_value_heads=int(raw.get("num_key_value_heads") or num_heads),
            head_dim=int(raw.get("head_dim") or hidden_size // num_heads),
            intermediate_size=int(need("intermediate_size")),
            vocab_size=vocab_size,
            draft_vocab_size=int(raw.get("draft_vocab_size") or vocab_size),
            rms_norm_eps=float(need("rms_norm_eps")),
            rope_theta=float(raw.get("rope_theta") or 10000.0),
            max_position_embeddings=int(raw.get("max_position_embeddings") or 2048),
            target_hidden_size=int(raw.get("target_hidden_size") or hidden_size),
            aux_hidden_state_layer_ids=None if layer_ids is None else tuple(int(i) for i in layer_ids),
            norm_before_fc=bool(eagle_config.get("norm_before_fc", raw.get("norm_before_fc", False))),
            norm_before_residual=bool(raw.get("norm_before_residual", False)),
            return_hidden_post_norm=bool(eagle_config.get("return_hidden_post_norm", False)),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        )

    @classmethod
    def from_json(cls, path: str | Path) -> "Eagle3Config":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"EAGLE-3 head config not found: {path}")
        return cls.from_dict(json.loads(path.read_text()), source=str(path))


def default_layers_to_capture(target_num_layers: int) -> list[int]:
    """TensorRT-LLM's default (Eagle3SpecMetadata): low, middle and high layer outputs."""
    if target_num_layers == 1:
        return [0]
    if target_num_layers <= 5:
        raise ValueError(f"target has {target_num_layers} layers: too few for the default EAGLE-3 capture "
                         "(1, L//2-1, L-4); set eagle_aux_hidden_state_layer_ids in the head config")
    return [1, target_num_layers // 2 - 1, target_num_layers - 4]


def resolve_layers_to_capture(layer_ids: Sequence[int] | None, target_num_layers: int) -> list[int]:
    """Validated capture list (order kept: it is the concatenation order fc was trained on)."""
    if layer_ids is None:
        return default_layers_to_capture(target_num_layers)
    resolved = [int(i) for i in layer_ids]
    if not resolved:
        raise ValueError("layers_to_capture must name at least one target layer")
    for index in resolved:
        if index != FINAL_NORMED_STATE and not 0 <= index < target_num_layers:
            raise ValueError(f"layers_to_capture: {index} is not a layer of a {target_num_layers}-layer target "
                             f"(use 0..{target_num_layers - 1}, or -1 for the final normed state)")
    if len(set(resolved)) != len(resolved):
        raise ValueError(f"layers_to_capture has duplicates: {resolved}")
    return resolved


# -- safetensors I/O ---------------------------------------------------------------------
_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
    "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """All tensors of one .safetensors file; BF16 is widened to float32.

    Parsed directly (8-byte header length, JSON header, raw little-endian data) because the
    public heads are bfloat16, which numpy - and so safetensors.numpy - cannot represent.
    """
    path = Path(path)
    with path.open("rb") as handle:
        header_len = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(header_len))
    data_start = 8 + header_len
    tensors: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype, shape = info["dtype"], tuple(info["shape"])
        begin, end = info["data_offsets"]
        count = int(np.prod(shape)) if shape else 1
        if dtype == "BF16":
            stored_dtype = np.dtype("<u2")
        elif dtype in _SAFETENSORS_DTYPES:
            stored_dtype = np.dtype(_SAFETENSORS_DTYPES[dtype]).newbyteorder("<")
        else:
            raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {dtype}")
        stored = np.fromfile(path, dtype=stored_dtype, count=count, offset=data_start + begin)
        if stored.nbytes != end - begin:
            raise ValueError(f"{path}: tensor {name!r} is truncated or its offsets disagree with its shape")
        if dtype == "BF16":
            stored = (stored.astype(np.uint32) << 16).view(np.float32)
        tensors[name] = stored.reshape(shape)
    return tensors


def _canonical_key(key: str) -> str:
    """Map the published key variants onto one form (`midlayer.*`, no `model.` prefix)."""
    if key.startswith("model."):
        key = key[len("model."):]
    match = re.match(r"^(?:layers|midlayers)\.(\d+)\.", key)
    if match:
        if match.group(1) != "0":
            raise ValueError(f"weight {key!r}: only single-layer EAGLE-3 heads are supported")
        key = LAYER_PREFIX + key[match.end():]
    return key


def load_head_weights(head_dir: str | Path) -> dict[str, np.ndarray]:
    head_dir = Path(head_dir)
    files = sorted(head_dir.glob("*.safetensors"))
    if not files:
        hint = " (pytorch_model.bin found: convert it to model.safetensors)" \
            if (head_dir / "pytorch_model.bin").exists() else ""
        raise FileNotFoundError(f"{head_dir}: no *.safetensors weights{hint}")
    weights: dict[str, np.ndarray] = {}
    for file in files:
        for key, array in read_safetensors(file).items():
            weights[_canonical_key(key)] = array
    return weights


def save_eagle3_head(out_dir: str | Path, config: dict[str, Any], weights: dict[str, np.ndarray]) -> Path:
    """Write config.json + model.safetensors (keys written as given)."""
    from safetensors.numpy import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file({key: np.ascontiguousarray(value) for key, value in weights.items()},
              str(out_dir / "model.safetensors"))
    return out_dir


# -- the model -----------------------------------------------------------------------------
def _rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    variance = np.mean(np.square(x, dtype=np.float32), axis=-1, keepdims=True)
    return (x / np.sqrt(variance + eps)).astype(np.float32) * weight


def _silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


class DraftKVCache:
    """Keys and values of the draft's one attention layer for one sequence (grows by doubling)."""

    def __init__(self, num_kv_heads: int, head_dim: int, capacity: int = 64):
        self.keys = np.zeros((capacity, num_kv_heads, head_dim), dtype=np.float32)
        self.values = np.zeros_like(self.keys)
        self.length = 0

    def append(self, keys: np.ndarray, values: np.ndarray) -> None:
        needed = self.length + len(keys)
        if needed > len(self.keys):
            capacity = len(self.keys)
            while capacity < needed:
                capacity *= 2
            for name in ("keys", "values"):
                grown = np.zeros((capacity, *self.keys.shape[1:]), dtype=np.float32)
                grown[: self.length] = getattr(self, name)[: self.length]
                setattr(self, name, grown)
        self.keys[self.length: needed] = keys
        self.values[self.length: needed] = values
        self.length = needed

    def truncate(self, length: int) -> None:
        """Roll back to the first `length` positions (drop speculative rows)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"truncate length must be 0..{self.length}, got {length}")
        self.length = length


class Eagle3DraftModel:
    def __init__(self, config: Eagle3Config, weights: dict[str, np.ndarray], embed_tokens: np.ndarray,
                 target_num_layers: int, layers_to_capture: Sequence[int] | None = None,
                 source: str = "EAGLE-3 head"):
        self.config = config
        self.target_num_layers = int(target_num_layers)
        self._source = source
        c = config
        hidden, q_width, kv_width = c.hidden_size, c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
        if c.num_attention_heads % c.num_key_value_heads:
            raise ValueError(f"{source}: num_attention_heads {c.num_attention_heads} is not a multiple of "
                             f"num_key_value_heads {c.num_key_value_heads}")

        def take(key: str, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
            if key not in weights:
                raise KeyError(f"{source}: missing tensor {key!r}")
            array = np.asarray(weights[key])
            if array.shape != shape:
                raise ValueError(f"{source}: tensor {key!r} has shape {array.shape}, expected {shape}")
            return np.ascontiguousarray(array, dtype=dtype)

        layer = {name: LAYER_PREFIX + name for name in LAYER_KEYS}
        self.input_layernorm = take(layer["input_layernorm.weight"], (hidden,))
        self.hidden_norm = take(layer["hidden_norm.weight"], (hidden,))
        # q, k and v side by side: one matmul over the batch instead of three
        self.qkv_proj = np.concatenate([
            take(layer["self_attn.q_proj.weight"], (q_width, 2 * hidden)),
            take(layer["self_attn.k_proj.weight"], (kv_width, 2 * hidden)),
            take(layer["self_attn.v_proj.weight"], (kv_width, 2 * hidden)),
        ])
        self.o_proj = take(layer["self_attn.o_proj.weight"], (hidden, q_width))
        self.post_attention_layernorm = take(layer["post_attention_layernorm.weight"], (hidden,))
        self.gate_up_proj = np.concatenate([
            take(layer["mlp.gate_proj.weight"], (c.intermediate_size, hidden)),
            take(layer["mlp.up_proj.weight"], (c.intermediate_size, hidden)),
        ])
        self.down_proj = take(layer["mlp.down_proj.weight"], (hidden, c.intermediate_size))
        self.norm = take("norm.weight", (hidden,))

        if "embed_tokens.weight" in weights:
            self.embed_tokens = take("embed_tokens.weight", (c.vocab_size, hidden))
        elif embed_tokens is not None:
            embed = np.asarray(embed_tokens)
            if embed.shape != (c.vocab_size, hidden):
                raise ValueError(f"{source}: has no embed_tokens.weight and the target's embedding has shape "
                                 f"{embed.shape}, expected ({c.vocab_size}, {hidden})")
            self.embed_tokens = np.ascontiguousarray(embed, dtype=np.float32)
        else:
            raise KeyError(f"{source}: missing tensor 'embed_tokens.weight' and no target embedding was given")

        if "lm_head.weight" in weights:
            self.lm_head = take("lm_head.weight", (c.draft_vocab_size, hidden))
        elif c.tie_word_embeddings and c.draft_vocab_size == c.vocab_size:
            self.lm_head = self.embed_tokens
        else:
            raise KeyError(f"{source}: missing tensor 'lm_head.weight'")

        if "d2t" in weights:
            self.d2t = take("d2t", (c.draft_vocab_size,), np.int64)
        elif c.draft_vocab_size == c.vocab_size:
            self.d2t = np.zeros(c.draft_vocab_size, dtype=np.int64)
        else:
            raise KeyError(f"{source}: missing tensor 'd2t' (draft_vocab_size {c.draft_vocab_size} "
                           f"!= vocab_size {c.vocab_size})")
        self.draft_target_ids = np.arange(c.draft_vocab_size, dtype=np.int64) + self.d2t
        if (self.draft_target_ids.min(initial=0) < 0 or self.draft_target_ids.max(initial=0) >= c.vocab_size
                or len(np.unique(self.draft_target_ids)) != c.draft_vocab_size):
            raise ValueError(f"{source}: d2t does not map the draft vocab onto distinct target ids < {c.vocab_size}")
        derived_t2d = np.zeros(c.vocab_size, dtype=bool)
        derived_t2d[self.draft_target_ids] = True
        if "t2d" in weights:
            self.t2d = take("t2d", (c.vocab_size,), bool)
            if not np.array_equal(self.t2d, derived_t2d):
                raise ValueError(f"{source}: t2d disagrees with d2t (t2d must mark exactly the ids d2t maps to)")
        else:
            self.t2d = derived_t2d

        self._fc_weight = weights.get("fc.weight")
        self._input_norm_weight = weights.get("input_norm.weight")
        self._inv_freq = 1.0 / (c.rope_theta ** (np.arange(0, c.head_dim, 2, dtype=np.float64) / c.head_dim))
        self.set_layers_to_capture(c.aux_hidden_state_layer_ids if layers_to_capture is None else layers_to_capture)

    @classmethod
    def from_pretrained(cls, head_dir: str | Path, target_embed_tokens: np.ndarray | None,
                        target_num_layers: int, layers_to_capture: Sequence[int] | None = None
                        ) -> "Eagle3DraftModel":
        """Load a head folder. `layers_to_capture` overrides the head config (the deployment
        YAML's `eagle3_layers_to_capture`); neither given: TensorRT-LLM's default."""
        head_dir = Path(head_dir)
        config = Eagle3Config.from_json(head_dir / "config.json")
        return cls(config, load_head_weights(head_dir), target_embed_tokens, target_num_layers,
                   layers_to_capture, source=str(head_dir))

    def use_weight_format(self, weight_format: str) -> None:
        """Run the linear layers (fc included) in `weight_format` (fast_linear); call after set_layers_to_capture.

        The head is small but runs draft_len times per step, so it must be as fast as the target.
        """
        for name in ("fc", "qkv_proj", "o_proj", "gate_up_proj", "down_proj", "lm_head"):
            weight = getattr(self, name)
            if isinstance(weight, np.ndarray):
                setattr(self, name, quantized_linear(weight, weight_format, keep_8bit=True))

    # -- capture / fuse ------------------------------------------------------------------------
    def set_layers_to_capture(self, layer_ids: Sequence[int] | None) -> None:
        """Choose the target layers fed to fc; checked against fc's input width."""
        c = self.config
        layers = resolve_layers_to_capture(layer_ids, self.target_num_layers)
        captured_width = len(layers) * c.target_hidden_size
        # TensorRT-LLM builds fc only for more than one captured layer; sglang applies it only
        # when the captured width differs from hidden_size. One same-width layer: no fc.
        applies_fc = len(layers) > 1 or captured_width != c.hidden_size
        fc = input_norm = None
        if applies_fc:
            if self._fc_weight is None:
                raise KeyError(f"{self._source}: missing tensor 'fc.weight' (needed to fuse {len(layers)} "
                               f"captured layers {layers} of width {c.target_hidden_size})")
            fc = np.ascontiguousarray(self._fc_weight, dtype=np.float32)
            if fc.shape != (c.hidden_size, captured_width):
                raise ValueError(f"{self._source}: fc.weight has shape {fc.shape}, but capturing {layers} "
                                 f"x target_hidden_size {c.target_hidden_size} needs "
                                 f"({c.hidden_size}, {captured_width})")
            if c.norm_before_fc:
                if self._input_norm_weight is None:
                    raise KeyError(f"{self._source}: missing tensor 'input_norm.weight' (norm_before_fc is set)")
                input_norm = np.ascontiguousarray(self._input_norm_weight, dtype=np.float32)
                if input_norm.shape != (captured_width,):
                    raise ValueError(f"{self._source}: input_norm.weight has shape {input_norm.shape}, "
                                     f"expected ({captured_width},)")
        self.layers_to_capture = layers
        self.fc, self.input_norm = fc, input_norm

    def fuse(self, captured: np.ndarray) -> np.ndarray:
        """Captured target states (n, k*target_hidden) -> draft features (n, hidden)."""
        captured = np.asarray(captured, dtype=np.float32)
        expected = len(self.layers_to_capture) * self.config.target_hidden_size
        if captured.ndim != 2 or captured.shape[1] != expected:
            raise ValueError(f"fuse expects (n, {expected}) captured states for layers "
                             f"{self.layers_to_capture}, got {captured.shape}")
        if self.fc is None:
            return captured
        if self.input_norm is not None:
            captured = _rms_norm(captured, self.input_norm, self.config.rms_norm_eps)
        return linear(captured, self.fc)

    # -- forward -------------------------------------------------------------------------------
    def new_cache(self) -> DraftKVCache:
        return DraftKVCache(self.config.num_key_value_heads, self.config.head_dim)

    def forward(self, token_ids: list[np.ndarray], features: list[np.ndarray], caches: list[DraftKVCache],
                num_logits: list[int]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Ragged batch: sequence i appends its n_i rows at positions caches[i].length...

        Returns (draft_logits[i] (num_logits_i, draft_vocab) for its last rows,
                 hidden_out[i] (n_i, hidden), the next chained step's features).
        """
        c = self.config
        if not len(token_ids) == len(features) == len(caches) == len(num_logits):
            raise ValueError("forward: token_ids, features, caches and num_logits must have one entry per sequence")
        counts = [len(ids) for ids in token_ids]
        for index, (count, feature, wanted) in enumerate(zip(counts, features, num_logits)):
            if np.shape(feature) != (count, c.hidden_size):
                raise ValueError(f"forward: features[{index}] has shape {np.shape(feature)}, "
                                 f"expected ({count}, {c.hidden_size})")
            if not 0 <= wanted <= count:
                raise ValueError(f"forward: num_logits[{index}] must be 0..{count}, got {wanted}")
        if sum(counts) == 0:
            empty = np.zeros((0, c.hidden_size), dtype=np.float32)
            return ([np.zeros((0, c.draft_vocab_size), dtype=np.float32) for _ in counts], [empty for _ in counts])

        ids = np.concatenate([np.asarray(t, dtype=np.int64).reshape(-1) for t in token_ids])
        feature_rows = np.concatenate([np.asarray(f, dtype=np.float32) for f in features])
        normed_feature = _rms_norm(feature_rows, self.hidden_norm, c.rms_norm_eps)
        attn_input = np.concatenate(
            [_rms_norm(self.embed_tokens[ids], self.input_layernorm, c.rms_norm_eps), normed_feature], axis=1)
        residual = normed_feature if c.norm_before_residual else feature_rows

        qkv = linear(attn_input, self.qkv_proj)                   # (N, (H + 2 KV) * D)
        q_width = c.num_attention_heads * c.head_dim
        kv_width = c.num_key_value_heads * c.head_dim
        attn_out = np.empty((len(ids), q_width), dtype=np.float32)
        start = 0
        for count, cache in zip(counts, caches):
            if count:
                rows = qkv[start: start + count]
                positions = cache.length + np.arange(count)
                queries = self._rope(rows[:, :q_width].reshape(count, c.num_attention_heads, c.head_dim), positions)
                keys = self._rope(rows[:, q_width: q_width + kv_width].reshape(count, c.num_key_value_heads, c.head_dim),
                                  positions)
                values = rows[:, q_width + kv_width:].reshape(count, c.num_key_value_heads, c.head_dim)
                cache.append(keys, values)
                attn_out[start: start + count] = self._attend(queries, cache, positions)
            start += count

        hidden = residual + linear(attn_out, self.o_proj)
        gate_up = linear(_rms_norm(hidden, self.post_attention_layernorm, c.rms_norm_eps), self.gate_up_proj)
        gate, up = gate_up[:, : c.intermediate_size], gate_up[:, c.intermediate_size:]
        hidden = hidden + linear(_silu(gate) * up, self.down_proj)  # (N, hidden), pre-norm

        ends = np.cumsum(counts)
        logit_rows = np.concatenate([np.arange(end - wanted, end) for end, wanted in zip(ends, num_logits)])
        logits = linear(_rms_norm(hidden[logit_rows], self.norm, c.rms_norm_eps), self.lm_head)
        hidden_out = _rms_norm(hidden, self.norm, c.rms_norm_eps) if c.return_hidden_post_norm else hidden
        logits_split = np.split(logits, np.cumsum(num_logits)[:-1])
        hidden_split = np.split(hidden_out, ends[:-1])
        return logits_split, hidden_split

    def _rope(self, x: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Rotate-half RoPE (HF Llama), x (n, heads, D) at the given positions."""
        angles = positions[:, None].astype(np.float64) * self._inv_freq[None, :]      # (n, D/2)
        cos = np.cos(np.concatenate([angles, angles], axis=1)).astype(np.float32)[:, None, :]
        sin = np.sin(np.concatenate([angles, angles], axis=1)).astype(np.float32)[:, None, :]
        half = x.shape[-1] // 2
        rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
        return x * cos + rotated * sin

    def _attend(self, queries: np.ndarray, cache: DraftKVCache, positions: np.ndarray) -> np.ndarray:
        """Causal GQA of n new rows against the sequence's whole cache -> (n, H*D)."""
        c = self.config
        count = len(queries)
        group = c.num_attention_heads // c.num_key_value_heads
        keys = cache.keys[: cache.length].transpose(1, 0, 2)            # (KV, T, D)
        values = cache.values[: cache.length].transpose(1, 0, 2)
        grouped = queries.reshape(count, c.num_key_value_heads, group, c.head_dim).transpose(1, 2, 0, 3)
        scores = grouped @ keys[:, None].transpose(0, 1, 3, 2) / math.sqrt(c.head_dim)   # (KV, G, n, T)
        future = np.arange(cache.length)[None, :] > positions[:, None]  # (n, T)
        scores = np.where(future, -np.inf, scores)
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        weights = scores / scores.sum(axis=-1, keepdims=True)
        out = weights @ values[:, None]                                  # (KV, G, n, D)
        return out.transpose(2, 0, 1, 3).reshape(count, c.num_attention_heads * c.head_dim)

    # -- vocabularies --------------------------------------------------------------------------
    def draft_to_target(self, draft_ids) -> np.ndarray:
        """Target token ids of draft ids (`target = draft + d2t[draft]`)."""
        draft_ids = np.asarray(draft_ids, dtype=np.int64)
        return draft_ids + self.d2t[draft_ids]

    def draft_probs_to_target(self, draft_probs: np.ndarray) -> np.ndarray:
        """(rows, draft_vocab) distributions -> (rows, vocab), zero outside the draft vocab."""
        draft_probs = np.atleast_2d(draft_probs)
        out = np.zeros((len(draft_probs), self.config.vocab_size), dtype=np.float64)
        out[:, self.draft_target_ids] = draft_probs
        return out


# -- test heads ----------------------------------------------------------------------------
def select_draft_vocab(vocab_size: int, draft_vocab_size: int,
                       token_counts: np.ndarray | None = None) -> np.ndarray:
    """Ascending target ids of the draft vocab: the most frequent ones (ties: lower id), or the first ids."""
    if not 0 < draft_vocab_size <= vocab_size:
        raise ValueError(f"draft_vocab_size must be 1..{vocab_size}, got {draft_vocab_size}")
    if token_counts is None:
        return np.arange(draft_vocab_size, dtype=np.int64)
    token_counts = np.asarray(token_counts)
    if token_counts.shape != (vocab_size,):
        raise ValueError(f"token_counts must have shape ({vocab_size},), got {token_counts.shape}")
    most_frequent = np.argsort(-token_counts, kind="stable")[:draft_vocab_size]
    return np.sort(most_frequent).astype(np.int64)


def head_config(target_config: dict[str, Any], layers_to_capture: list[int], draft_vocab: int,
                torch_dtype: str = "float32") -> dict[str, Any]:
    """config.json of the head in the public layout."""
    hidden = int(target_config["hidden_size"])
    num_heads = int(target_config["num_attention_heads"])
    return {
        "architectures": [ARCHITECTURE],
        "model_type": "llama",
        "hidden_act": "silu",
        "hidden_size": hidden,
        "num_attention_heads": num_heads,
        "num_key_value_heads": int(target_config.get("num_key_value_heads") or num_heads),
        "head_dim": int(target_config.get("head_dim") or hidden // num_heads),
        "intermediate_size": int(target_config["intermediate_size"]),
        "num_hidden_layers": 1,
        "vocab_size": int(target_config["vocab_size"]),
        "draft_vocab_size": draft_vocab,
        "rms_norm_eps": float(target_config.get("rms_norm_eps", 1e-5)),
        "rope_theta": float(target_config.get("rope_theta", 10000.0)),
        "rope_scaling": None,
        "max_position_embeddings": int(target_config.get("max_position_embeddings", 2048)),
        "target_hidden_size": hidden,
        "tie_word_embeddings": False,
        "torch_dtype": torch_dtype,
        "eagle_config": {"eagle_aux_hidden_state_layer_ids": list(layers_to_capture),
                         "use_aux_hidden_state": len(layers_to_capture) > 1},
    }


def make_random_head(out_dir: str | Path, target_config: dict[str, Any], layers_to_capture: list[int],
                     draft_vocab_size: int, seed: int, token_counts: np.ndarray | None = None) -> Path:
    """Write an untrained head (small random weights) shaped for `target_config` (its HF config.json)."""
    hidden = int(target_config["hidden_size"])
    num_heads = int(target_config["num_attention_heads"])
    num_kv_heads = int(target_config.get("num_key_value_heads") or num_heads)
    head_dim = int(target_config.get("head_dim") or hidden // num_heads)
    intermediate = int(target_config["intermediate_size"])
    vocab_size = int(target_config["vocab_size"])
    layers = resolve_layers_to_capture(layers_to_capture, int(target_config["num_hidden_layers"]))
    draft_ids = select_draft_vocab(vocab_size, draft_vocab_size, token_counts)

    rng = np.random.default_rng(seed)

    def normal(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    prefix = LAYER_PREFIX
    weights = {
        prefix + "input_layernorm.weight": np.ones(hidden, np.float32),
        prefix + "hidden_norm.weight": np.ones(hidden, np.float32),
        prefix + "self_attn.q_proj.weight": normal(num_heads * head_dim, 2 * hidden),
        prefix + "self_attn.k_proj.weight": normal(num_kv_heads * head_dim, 2 * hidden),
        prefix + "self_attn.v_proj.weight": normal(num_kv_heads * head_dim, 2 * hidden),
        prefix + "self_attn.o_proj.weight": normal(hidden, num_heads * head_dim),
        prefix + "post_attention_layernorm.weight": np.ones(hidden, np.float32),
        prefix + "mlp.gate_proj.weight": normal(intermediate, hidden),
        prefix + "mlp.up_proj.weight": normal(intermediate, hidden),
        prefix + "mlp.down_proj.weight": normal(hidden, intermediate),
        "norm.weight": np.ones(hidden, np.float32),
        "lm_head.weight": normal(draft_vocab_size, hidden),
        "d2t": draft_ids - np.arange(draft_vocab_size, dtype=np.int64),
        "t2d": np.isin(np.arange(vocab_size), draft_ids),
    }
    if len(layers) > 1:   # one captured layer of the same width needs no fc
        weights["fc.weight"] = normal(hidden, len(layers) * hidden)
    config = head_config(target_config, layers, draft_vocab_size)
    return save_eagle3_head(out_dir, config, weights)
