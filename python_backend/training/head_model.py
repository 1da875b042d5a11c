"""The EAGLE-3 head in torch: the same arithmetic as the numpy `Eagle3DraftModel`, trainable.

It runs a whole sequence per draft step (training-time test, see `ttt.py`): step 0 reads
the target's fused features; step k reads step k-1's `hidden_out` for the same rows, one
token further on. Row j of step k sits at rope position j + k and attends to the step-0 rows
0..j plus its own rows of steps 1..k - exactly what a row chained at serve time sees in the
draft KV cache (real rows first, then its own speculative rows).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from python_backend.reference.eagle3 import LAYER_PREFIX, head_config  # noqa: F401 (re-export)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    x = x.float()   # in float32 also under bfloat16 autocast
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """HF rotate-half RoPE; x (B, heads, T, D), cos/sin (T, D)."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin


class Eagle3Head(nn.Module):
    def __init__(self, hidden: int, num_heads: int, num_kv_heads: int, head_dim: int, intermediate: int,
                 num_captured: int, draft_vocab: int, rms_norm_eps: float, rope_theta: float,
                 embed_tokens: torch.Tensor):
        super().__init__()
        self.hidden, self.num_heads, self.num_kv_heads, self.head_dim = hidden, num_heads, num_kv_heads, head_dim
        self.eps, self.num_captured = rms_norm_eps, num_captured
        # fc only fuses several captured layers (one same-width layer is used as is, as at serve time)
        self.fc = nn.Linear(num_captured * hidden, hidden, bias=False) if num_captured > 1 else None
        self.input_layernorm = nn.Parameter(torch.ones(hidden))
        self.hidden_norm = nn.Parameter(torch.ones(hidden))
        self.q_proj = nn.Linear(2 * hidden, num_heads * head_dim, bias=False)
        self.k_proj = nn.Linear(2 * hidden, num_kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(2 * hidden, num_kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(num_heads * head_dim, hidden, bias=False)
        self.post_attention_layernorm = nn.Parameter(torch.ones(hidden))
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)
        self.norm = nn.Parameter(torch.ones(hidden))
        self.lm_head = nn.Linear(hidden, draft_vocab, bias=False)
        # the target's input embedding, shared and frozen (the head checkpoint does not carry it)
        self.register_buffer("embed_tokens", embed_tokens, persistent=False)
        inv_freq = 1.0 / rope_theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def fuse(self, captured: torch.Tensor) -> torch.Tensor:
        if self.fc is None:
            return captured
        with torch.autocast(captured.device.type, enabled=False):   # float32: the captured states have large outliers
            return self.fc(captured.float())

    def rope_tables(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        angles = positions.to(torch.float64)[:, None] * self.inv_freq[None, :]
        angles = torch.cat([angles, angles], dim=-1)
        return angles.cos().float(), angles.sin().float()

    def step(self, token_ids: torch.Tensor, features: torch.Tensor, step_index: int,
             past_kv: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """One draft step over whole sequences.

        token_ids (B, T), features (B, T, hidden); past_kv: the (keys, values) of steps
        0..step_index-1, each (B, kv_heads, T, D). Appends this step's keys/values to past_kv.
        Returns hidden_out (B, T, hidden), pre-norm: the next step's features (`logits` reads it).
        """
        batch, length, _ = features.shape
        x = torch.cat([rms_norm(self.embed_tokens[token_ids], self.input_layernorm, self.eps),
                       rms_norm(features, self.hidden_norm, self.eps)], dim=-1)
        q = self.q_proj(x).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = self.rope_tables(torch.arange(length, device=features.device) + step_index)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        past_kv.append((k, v))

        group = self.num_heads // self.num_kv_heads
        expand = lambda t: t.repeat_interleave(group, dim=1)            # (B, heads, T, D)
        scale = 1.0 / math.sqrt(self.head_dim)
        keys0, values0 = expand(past_kv[0][0]), expand(past_kv[0][1])
        causal = torch.ones(length, length, dtype=torch.bool, device=features.device).tril()
        scores = [(q @ keys0.transpose(-1, -2) * scale).masked_fill(~causal, float("-inf"))]   # (B, H, T, T)
        # the row's own chained rows of steps 1..k: one key each, on the diagonal
        scores += [((q * expand(kk)).sum(-1, keepdim=True) * scale) for kk, _ in past_kv[1:]]
        weights = torch.softmax(torch.cat(scores, dim=-1), dim=-1)
        attended = weights[..., :length] @ values0
        for offset, (_, vv) in enumerate(past_kv[1:]):
            attended = attended + weights[..., length + offset: length + offset + 1] * expand(vv)
        attended = attended.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim)

        # the residual stream stays float32 under bfloat16 autocast (only the matmuls narrow)
        hidden = features.float() + self.o_proj(attended).float()
        mlp_in = rms_norm(hidden, self.post_attention_layernorm, self.eps)
        hidden = hidden + self.down_proj(nn.functional.silu(self.gate_proj(mlp_in)) * self.up_proj(mlp_in)).float()
        return hidden

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Draft-vocab logits of hidden_out rows (training computes them only for rows with a target)."""
        return self.lm_head(rms_norm(hidden, self.norm, self.eps))

    # -- checkpoint I/O (public LlamaForCausalLMEagle3 keys) -------------------------------
    def initialise_from_target(self, target, layer_index: int, draft_target_ids: np.ndarray,
                               fc_source: int | None, seed: int) -> None:
        """Start from the target: the draft layer from target layer `layer_index` (its weights
        read the feature half of the input), lm_head from the tied embedding rows of the draft
        vocab, the final norm from the target's; fc passes captured block `fc_source` through.
        The token half of q/k/v starts small and random: the target never saw x_{j+1} there."""
        generator = torch.Generator().manual_seed(seed)
        layer = target.layers[layer_index]
        hidden, q_width = self.hidden, self.num_heads * self.head_dim
        kv_width = self.num_kv_heads * self.head_dim
        qkv = torch.from_numpy(np.asarray(layer.qkv_proj, dtype=np.float32))
        with torch.no_grad():
            for proj, rows in ((self.q_proj, qkv[:q_width]), (self.k_proj, qkv[q_width:q_width + kv_width]),
                               (self.v_proj, qkv[q_width + kv_width:])):
                proj.weight[:, :hidden] = torch.randn(rows.shape, generator=generator) * 0.02
                proj.weight[:, hidden:] = rows
            self.hidden_norm.copy_(torch.from_numpy(layer.input_norm))
            self.o_proj.weight.copy_(torch.from_numpy(layer.o_proj))
            self.post_attention_layernorm.copy_(torch.from_numpy(layer.post_attention_norm))
            intermediate = self.gate_proj.weight.shape[0]
            self.gate_proj.weight.copy_(torch.from_numpy(layer.gate_up_proj[:intermediate]))
            self.up_proj.weight.copy_(torch.from_numpy(layer.gate_up_proj[intermediate:]))
            self.down_proj.weight.copy_(torch.from_numpy(layer.down_proj))
            self.norm.copy_(torch.from_numpy(target.norm))
            self.lm_head.weight.copy_(torch.from_numpy(target.lm_head[draft_target_ids]))
            if self.fc is not None:
                self.fc.weight.copy_(torch.randn(self.fc.weight.shape, generator=generator) * 0.01)
                if fc_source is not None:
                    self.fc.weight[:, fc_source * hidden:(fc_source + 1) * hidden] += torch.eye(hidden)

    def state_in_public_layout(self) -> dict[str, np.ndarray]:
        """float32 numpy weights under the keys SpecForge writes and the loaders read."""
        def array(t: torch.Tensor) -> np.ndarray:
            return t.detach().to(torch.float32).cpu().numpy().copy()

        prefix = LAYER_PREFIX
        weights = {
            prefix + "input_layernorm.weight": array(self.input_layernorm),
            prefix + "hidden_norm.weight": array(self.hidden_norm),
            prefix + "self_attn.q_proj.weight": array(self.q_proj.weight),
            prefix + "self_attn.k_proj.weight": array(self.k_proj.weight),
            prefix + "self_attn.v_proj.weight": array(self.v_proj.weight),
            prefix + "self_attn.o_proj.weight": array(self.o_proj.weight),
            prefix + "post_attention_layernorm.weight": array(self.post_attention_layernorm),
            prefix + "mlp.gate_proj.weight": array(self.gate_proj.weight),
            prefix + "mlp.up_proj.weight": array(self.up_proj.weight),
            prefix + "mlp.down_proj.weight": array(self.down_proj.weight),
            "norm.weight": array(self.norm),
            "lm_head.weight": array(self.lm_head.weight),
        }
        if self.fc is not None:
            weights["fc.weight"] = array(self.fc.weight)
        return weights

    def load_public_layout(self, weights: dict[str, np.ndarray]) -> None:
        """The inverse of `state_in_public_layout` (d2t / t2d ignored)."""
        prefix = LAYER_PREFIX
        targets = {
            prefix + "input_layernorm.weight": self.input_layernorm,
            prefix + "hidden_norm.weight": self.hidden_norm,
            prefix + "self_attn.q_proj.weight": self.q_proj.weight,
            prefix + "self_attn.k_proj.weight": self.k_proj.weight,
            prefix + "self_attn.v_proj.weight": self.v_proj.weight,
            prefix + "self_attn.o_proj.weight": self.o_proj.weight,
            prefix + "post_attention_layernorm.weight": self.post_attention_layernorm,
            prefix + "mlp.gate_proj.weight": self.gate_proj.weight,
            prefix + "mlp.up_proj.weight": self.up_proj.weight,
            prefix + "mlp.down_proj.weight": self.down_proj.weight,
            "norm.weight": self.norm,
            "lm_head.weight": self.lm_head.weight,
        }
        if self.fc is not None:
            targets["fc.weight"] = self.fc.weight
        with torch.no_grad():
            for key, parameter in targets.items():
                parameter.copy_(torch.from_numpy(np.asarray(weights[key], dtype=np.float32)))


def head_from_target_config(target_config: dict[str, Any], num_captured: int, draft_vocab: int,
                            embed_tokens: np.ndarray) -> Eagle3Head:
    hidden = int(target_config["hidden_size"])
    num_heads = int(target_config["num_attention_heads"])
    return Eagle3Head(
        hidden=hidden, num_heads=num_heads,
        num_kv_heads=int(target_config.get("num_key_value_heads") or num_heads),
        head_dim=int(target_config.get("head_dim") or hidden // num_heads),
        intermediate=int(target_config["intermediate_size"]), num_captured=num_captured,
        draft_vocab=draft_vocab, rms_norm_eps=float(target_config.get("rms_norm_eps", 1e-5)),
        rope_theta=float(target_config.get("rope_theta", 10000.0)),
        embed_tokens=torch.from_numpy(np.asarray(embed_tokens, dtype=np.float32)))

