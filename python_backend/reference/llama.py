"""The Llama forward pass in numpy: the arithmetic of the reference engine.

One call serves prefill, decode and speculative verification for a ragged batch: every
sequence brings its new tokens and its own KV cache. The linear layers run once over all
new tokens concatenated (one matmul per weight per layer, which is what makes batching pay
on a CPU); attention runs per sequence against that sequence's cache.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .checkpoint import LlamaConfig, LlamaWeights, load_llama_checkpoint
from .fast_linear import check_weight_format, quantized_linear
from .kv_cache import KVCache
from .quantized_layers import QuantizedLayerStack

__all__ = ["ForwardOutput", "KVCache", "LlamaConfig", "LlamaModel", "RotaryEmbedding", "rms_norm"]

FINAL_HIDDEN_STATE = -1  # capture index of the hidden state after the final norm (what the LM head reads)


@dataclass
class ForwardOutput:
    logits: list[np.ndarray]              # per sequence: (num_logits_i, vocab), its last rows
    captured: list[np.ndarray] | None     # per sequence: (n_i, len(capture_layers) * hidden); None if none asked


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    mean_square = np.einsum("ij,ij->i", x, x)[:, None] / x.shape[-1]
    return x * (1.0 / np.sqrt(mean_square + eps)) * weight


GEMV_MAX_ROWS = 4            # up to this many rows, one GEMV per row beats OpenBLAS's GEMM
GEMV_BLOCK_ROWS = 4096       # weight rows per block: a block stays in cache for all the GEMVs


def linear(x: np.ndarray, weight) -> np.ndarray:
    """x (N, in) times weight (out, in) transposed -> (N, out), row-major like x.

    `weight` is a float32 array or a quantized layer (fast_linear), which runs itself.
    A speculative verification at concurrency 1 has K+1 = 4 rows. OpenBLAS's SGEMM packs the
    whole weight matrix first, so 2-4 rows cost ~3x one row (a GEMV). One GEMV per row over
    cache-sized blocks of the weight reads each block from memory once instead (measured on
    the 2-core EPYC, all of SmolLM2's weights, 4 rows: 40 ms vs 47 ms; from 8 rows on the GEMM
    wins).
    """
    if not isinstance(weight, np.ndarray):
        return weight(x)
    rows = x.shape[0]
    if not 2 <= rows <= GEMV_MAX_ROWS:
        return x @ weight.T
    out = np.empty((rows, weight.shape[0]), dtype=np.float32)
    for start in range(0, weight.shape[0], GEMV_BLOCK_ROWS):
        block = weight[start:start + GEMV_BLOCK_ROWS]
        for row in range(rows):
            np.dot(block, x[row], out=out[row, start:start + block.shape[0]])
    return out


def silu(x: np.ndarray) -> np.ndarray:
    # x * sigmoid(x), with sigmoid written via tanh: exact, and no overflow warnings for large -x.
    return x * (0.5 + 0.5 * np.tanh(0.5 * x))


class RotaryEmbedding:
    """RoPE in Hugging Face's rotate-half layout; cos/sin tables cached and grown lazily."""

    def __init__(self, config: LlamaConfig):
        self.head_dim = config.head_dim
        self.inverse_frequencies = rope_inverse_frequencies(config)      # (head_dim/2,), float64
        self._cos = np.empty((0, self.head_dim // 2), dtype=np.float32)
        self._sin = np.empty_like(self._cos)

    def tables(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """cos, sin for `positions`, each (len(positions), 1, head_dim/2) to broadcast over heads."""
        needed = int(positions.max()) + 1
        if needed > self._cos.shape[0]:
            size = max(needed, 2 * self._cos.shape[0], 256)
            angles = np.outer(np.arange(size, dtype=np.float64), self.inverse_frequencies)
            self._cos, self._sin = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
        return self._cos[positions][:, None, :], self._sin[positions][:, None, :]


def rope_inverse_frequencies(config: LlamaConfig) -> np.ndarray:
    inverse_frequencies = 1.0 / config.rope_theta ** (np.arange(0, config.head_dim, 2, dtype=np.float64)
                                                      / config.head_dim)
    scaling = config.rope_scaling
    if config.rope_type == "linear":
        return inverse_frequencies / scaling["factor"]
    if config.rope_type == "llama3":
        # Llama 3.1's frequency-dependent stretch: long wavelengths / factor, short kept, smooth between.
        factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
        original_context = scaling["original_max_position_embeddings"]
        wavelengths = 2 * math.pi / inverse_frequencies
        smooth = np.clip((original_context / wavelengths - low) / (high - low), 0.0, 1.0)
        return (1 - smooth) * inverse_frequencies / factor + smooth * inverse_frequencies
    return inverse_frequencies


def apply_rotary(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate (N, heads, head_dim) by position: pairs are (i, i + head_dim/2), HF's rotate-half."""
    half = x.shape[-1] // 2
    first, second = x[..., :half], x[..., half:]
    rotated = np.empty_like(x)
    rotated[..., :half] = first * cos - second * sin
    rotated[..., half:] = second * cos + first * sin
    return rotated


def causal_mask_bias(new_tokens: int, past_tokens: int) -> np.ndarray | None:
    """(new, past + new) additive bias: new token j sees the past and new tokens 0..j. None for one token."""
    if new_tokens == 1:
        return None
    bias = np.zeros((new_tokens, past_tokens + new_tokens), dtype=np.float32)
    bias[:, past_tokens:] = np.triu(np.full((new_tokens, new_tokens), -np.inf, dtype=np.float32), k=1)
    return bias


ROW_BY_ROW_MAX_TOKENS = 8    # verification passes (1 + draft length); prompts keep the batched path


def attend(queries: np.ndarray, keys: np.ndarray, values: np.ndarray, mask_bias: np.ndarray | None) -> np.ndarray:
    """Grouped-query attention of one sequence.

    queries (n, heads, head_dim), already scaled by 1/sqrt(head_dim); keys, values
    (kv_heads, T, head_dim) from the cache including the n new positions. Returns (n, heads * head_dim).
    """
    new_tokens, num_heads, head_dim = queries.shape
    num_kv_heads, total_tokens = keys.shape[0], keys.shape[1]
    if 1 < new_tokens <= ROW_BY_ROW_MAX_TOKENS:
        # A verification row must equal the decode step it replaces bit for bit (greedy drafting
        # stays lossless): the same 1-row matmuls over the same cache prefix. Quantized linear
        # layers would turn a last-bit difference here into a different int8 activation.
        past = total_tokens - new_tokens
        return np.concatenate([attend(queries[row:row + 1], keys[:, :past + row + 1], values[:, :past + row + 1], None)
                               for row in range(new_tokens)])
    group = num_heads // num_kv_heads
    # Query head h reads kv head h // group: fold the group into the rows of one matmul per kv head.
    if new_tokens == 1:
        grouped = queries.reshape(num_kv_heads, group, head_dim)
    else:
        grouped = (queries.reshape(new_tokens, num_kv_heads, group, head_dim)
                   .transpose(1, 2, 0, 3).reshape(num_kv_heads, group * new_tokens, head_dim))
    scores = grouped @ keys.transpose(0, 2, 1)                    # (kv_heads, group * n, T)
    if mask_bias is not None:
        scores = scores.reshape(num_kv_heads, group, new_tokens, total_tokens)
        scores += mask_bias
        scores = scores.reshape(num_kv_heads, group * new_tokens, total_tokens)
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    mixed = scores @ values                                       # (kv_heads, group * n, head_dim)
    if new_tokens == 1:
        return mixed.reshape(1, num_heads * head_dim)
    return (mixed.reshape(num_kv_heads, group, new_tokens, head_dim)
            .transpose(2, 0, 1, 3).reshape(new_tokens, num_heads * head_dim))


@dataclass
class DecoderLayer:
    """One layer's float32 weights, fused for fewer, larger matmuls.

    Linear weights keep HF's (out_features, in_features) orientation, row-major, applied as
    `x @ w.T`. Measured on the 2-core box with numpy's OpenBLAS: a pre-transposed (in, out)
    copy used as `x @ w` is ~2x slower for the 2..32-row batches of decode and verification;
    `(w @ x.T).T` wins in isolation but loses ~15% over a whole forward (column-major outputs).
    """

    input_norm: np.ndarray        # (hidden,)
    qkv_proj: np.ndarray          # (heads * head_dim + 2 * kv_heads * head_dim, hidden): q, k, v rows
    o_proj: np.ndarray            # (hidden, heads * head_dim)
    post_attention_norm: np.ndarray
    gate_up_proj: np.ndarray      # (2 * intermediate, hidden): gate rows, then up rows
    down_proj: np.ndarray         # (hidden, intermediate)


def _owned_float32(*parts: np.ndarray) -> np.ndarray:
    """A contiguous float32 copy (concatenated along rows), detached from any file mapping."""
    if len(parts) == 1:
        return np.array(parts[0], dtype=np.float32, order="C", copy=True)
    return np.ascontiguousarray(np.concatenate(parts, axis=0), dtype=np.float32)


class LlamaModel:
    def __init__(self, config: LlamaConfig, weights: LlamaWeights, weight_format: str = "float32"):
        """weight_format: float32 | int8 | q4 for the linear layers (fast_linear); norms and embeddings stay float32."""
        self.config = config
        self.weight_format = weight_format

        self.embed_tokens = _owned_float32(weights.embed_tokens)           # (vocab, hidden)
        if weights.lm_head is not None:
            self.lm_head = quantized_linear(_owned_float32(weights.lm_head), weight_format, keep_8bit=True)
        else:   # tied: float32 shares the embedding's copy
            self.lm_head = quantized_linear(self.embed_tokens, weight_format, keep_8bit=True)
        float32_layers = [
            DecoderLayer(
                input_norm=_owned_float32(layer.input_layernorm),
                qkv_proj=_owned_float32(layer.q_proj, layer.k_proj, layer.v_proj),
                o_proj=_owned_float32(layer.o_proj),
                post_attention_norm=_owned_float32(layer.post_attention_layernorm),
                gate_up_proj=_owned_float32(layer.gate_proj, layer.up_proj),
                down_proj=_owned_float32(layer.down_proj),
            )
            for layer in weights.layers
        ]
        check_weight_format(weight_format)
        # float32: numpy layer by layer; quantized: one onnxruntime call per layer (quantized_layers)
        self.layers = float32_layers if weight_format == "float32" else []
        self.quantized_layers = None if weight_format == "float32" else QuantizedLayerStack(
            float32_layers, config.rms_norm_eps, weight_format)
        self.norm = _owned_float32(weights.norm)
        self.rotary = RotaryEmbedding(config)

    @classmethod
    def from_pretrained(cls, folder: str | Path, weight_format: str = "float32") -> "LlamaModel":
        config, weights = load_llama_checkpoint(folder)
        return cls(config, weights, weight_format)

    @property
    def num_layers(self) -> int:
        return self.config.num_hidden_layers

    def new_cache(self) -> KVCache:
        return KVCache(self.config.num_hidden_layers, self.config.num_key_value_heads, self.config.head_dim)

    def embed(self, token_ids: np.ndarray) -> np.ndarray:
        """(n,) token ids -> (n, hidden) input embeddings."""
        token_ids = self._checked_ids(token_ids)
        return self.embed_tokens[token_ids]

    def forward(self, token_ids: list[np.ndarray], caches: list[KVCache], num_logits: list[int],
                capture_layers: Sequence[int] = ()) -> ForwardOutput:
        """Append each sequence's new tokens to its cache; logits for its last num_logits[i] tokens.

        capture_layers: i >= 0 = residual stream after decoder layer i; -1 = final hidden
        state after the final norm. Caches advance only if the whole call succeeds.
        """
        config = self.config
        token_ids = [self._checked_ids(ids) for ids in token_ids]
        self._check_batch(token_ids, caches, num_logits, capture_layers)
        new_counts = [len(ids) for ids in token_ids]
        past_counts = [cache.length for cache in caches]
        row_starts = np.concatenate([[0], np.cumsum(new_counts)]).tolist()
        positions = np.concatenate([np.arange(past, past + new) for past, new in zip(past_counts, new_counts)])
        for cache, new in zip(caches, new_counts):
            cache.reserve(new)
        mask_biases = [causal_mask_bias(new, past) for new, past in zip(new_counts, past_counts)]

        num_heads, num_kv_heads, head_dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
        q_width, kv_width = num_heads * head_dim, num_kv_heads * head_dim
        eps = config.rms_norm_eps
        cos, sin = self.rotary.tables(positions)
        query_scale = np.float32(1.0 / math.sqrt(head_dim))
        captured_by_layer = {}

        x = self.embed_tokens[np.concatenate(token_ids)]                 # (N, hidden) residual stream
        total_tokens = x.shape[0]
        qkv = self._first_qkv(x)                                         # (N, q_width + 2 kv_width)
        for layer_index in range(self.num_layers):
            # q and k heads side by side: one rotation for both
            rotated = apply_rotary(qkv[:, :q_width + kv_width].reshape(total_tokens, num_heads + num_kv_heads,
                                                                        head_dim), cos, sin)
            queries = rotated[:, :num_heads] * query_scale
            keys = rotated[:, num_heads:]
            values = qkv[:, q_width + kv_width:].reshape(total_tokens, num_kv_heads, head_dim)
            attention_out = np.empty((total_tokens, q_width), dtype=np.float32)
            for sequence, cache in enumerate(caches):
                start, end, past = row_starts[sequence], row_starts[sequence + 1], past_counts[sequence]
                cache.write(layer_index, past, keys[start:end], values[start:end])
                cached_keys, cached_values = cache.layer(layer_index, past + end - start)
                attention_out[start:end] = attend(queries[start:end], cached_keys, cached_values,
                                                  mask_biases[sequence])
            x, qkv = self._after_attention(layer_index, x, attention_out)
            if layer_index in capture_layers:
                captured_by_layer[layer_index] = x

        # Only the rows that need logits go through the final norm and the (vocab-wide) LM head.
        logit_rows = np.concatenate([np.arange(row_starts[i + 1] - count, row_starts[i + 1])
                                     for i, count in enumerate(num_logits)]).astype(np.int64)
        if FINAL_HIDDEN_STATE in capture_layers:
            captured_by_layer[FINAL_HIDDEN_STATE] = rms_norm(x, self.norm, eps)
            head_input = captured_by_layer[FINAL_HIDDEN_STATE][logit_rows]
        else:
            head_input = rms_norm(x[logit_rows], self.norm, eps)
        all_logits = linear(head_input, self.lm_head)
        for cache, new in zip(caches, new_counts):
            cache.advance(new)

        logit_starts = np.concatenate([[0], np.cumsum(num_logits)]).tolist()
        logits = [all_logits[logit_starts[i]:logit_starts[i + 1]] for i in range(len(caches))]
        captured = None
        if capture_layers:
            stacked = np.concatenate([captured_by_layer[index] for index in capture_layers], axis=1)
            captured = [stacked[row_starts[i]:row_starts[i + 1]] for i in range(len(caches))]
        return ForwardOutput(logits=logits, captured=captured)

    def _first_qkv(self, x: np.ndarray) -> np.ndarray:
        """Layer 0's fused q/k/v of the embeddings."""
        if self.quantized_layers is not None:
            return self.quantized_layers.first_qkv(x)
        layer = self.layers[0]
        return linear(rms_norm(x, layer.input_norm, self.config.rms_norm_eps), layer.qkv_proj)

    def _after_attention(self, index: int, x: np.ndarray, attention_out: np.ndarray):
        """(residual stream after layer `index`, the next layer's q/k/v or None after the last)."""
        if self.quantized_layers is not None:
            return self.quantized_layers.after_attention(index, x, attention_out)
        layer, eps, intermediate = self.layers[index], self.config.rms_norm_eps, self.config.intermediate_size
        x = x + linear(attention_out, layer.o_proj)
        gate_up = linear(rms_norm(x, layer.post_attention_norm, eps), layer.gate_up_proj)  # (N, 2 intermediate)
        x = x + linear(silu(gate_up[:, :intermediate]) * gate_up[:, intermediate:], layer.down_proj)
        if index + 1 == self.num_layers:
            return x, None
        following = self.layers[index + 1]
        return x, linear(rms_norm(x, following.input_norm, eps), following.qkv_proj)

    def _checked_ids(self, token_ids) -> np.ndarray:
        token_ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
        if token_ids.size and (token_ids.min() < 0 or token_ids.max() >= self.config.vocab_size):
            bad = token_ids[(token_ids < 0) | (token_ids >= self.config.vocab_size)][0]
            raise ValueError(f"token id {bad} is outside the vocabulary 0..{self.config.vocab_size - 1}")
        return token_ids

    def _check_batch(self, token_ids: list[np.ndarray], caches: list[KVCache], num_logits: list[int],
                     capture_layers: Sequence[int]) -> None:
        if not (len(token_ids) == len(caches) == len(num_logits)) or not caches:
            raise ValueError(f"token_ids, caches and num_logits must be non-empty and of one length, got "
                             f"{len(token_ids)}, {len(caches)}, {len(num_logits)}")
        if len({id(cache) for cache in caches}) != len(caches):
            raise ValueError("each sequence needs its own KVCache; one cache appears twice in the batch")
        for sequence, (ids, cache, count) in enumerate(zip(token_ids, caches, num_logits)):
            if len(ids) == 0:
                raise ValueError(f"sequence {sequence} has no new tokens")
            if not 0 <= count <= len(ids):
                raise ValueError(f"num_logits[{sequence}] must be 0..{len(ids)} (its new tokens), got {count}")
            if (cache.num_layers, cache.num_kv_heads, cache.head_dim) != (
                    self.config.num_hidden_layers, self.config.num_key_value_heads, self.config.head_dim):
                raise ValueError(f"caches[{sequence}] was not made by this model's new_cache()")
        for index in capture_layers:
            if not (index == FINAL_HIDDEN_STATE or 0 <= index < self.config.num_hidden_layers):
                raise ValueError(f"capture layer {index} must be -1 or 0..{self.config.num_hidden_layers - 1}")
