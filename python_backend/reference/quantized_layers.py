"""The target's decoder layers under `weights: int8 | q4`: one onnxruntime call per layer.

Everything between two attentions runs in one graph: o_proj and its residual, the MLP block
(norm, gate/up, SiLU, down, residual), then the next layer's input norm and q/k/v. A forward
step thus makes one session call per layer instead of four matmul calls plus numpy's norms
and SiLU, which on two cores cost more than the 4-bit matmuls themselves (per-call dispatch
and thread wake-ups, small-array numpy overhead). Attention stays in numpy (llama.attend).

Each op computes a row from that row alone, so a verification row equals its decode step
bit for bit (greedy drafting stays lossless; tests/test_fast_linear.py).
"""
from __future__ import annotations

import numpy as np

from .fast_linear import bits_of, make_session, matmul_nodes


class QuantizedLayerStack:
    """first_qkv(x) and after_attention(i, x, attention_out) for all decoder layers."""

    def __init__(self, layers, eps: float, weight_format: str):
        """layers: llama.DecoderLayer with float32 weights (fused qkv and gate/up)."""
        bits = bits_of(weight_format)
        self._first = make_session(_graph("first_qkv", ["x"], ["qkv"],
                                          *_norm_matmul(layers[0], "x", "qkv", "l0_", eps, bits)))
        self._layers = []
        for index, layer in enumerate(layers):
            following = layers[index + 1] if index + 1 < len(layers) else None
            self._layers.append(make_session(_tail_graph(index, layer, following, eps, bits)))

    def first_qkv(self, x: np.ndarray) -> np.ndarray:
        return self._layers_run(self._first, {"x": x})[0]

    def after_attention(self, index: int, x: np.ndarray, attention_out: np.ndarray):
        """(residual stream after layer `index`, the next layer's q/k/v or None after the last)."""
        outputs = self._layers_run(self._layers[index], {"x": x, "attention_out": attention_out})
        return outputs[0], (outputs[1] if len(outputs) > 1 else None)

    @staticmethod
    def _layers_run(session, feeds):
        return session.run(None, {name: np.ascontiguousarray(value, dtype=np.float32)
                                  for name, value in feeds.items()})


def _norm_matmul(layer, x: str, y: str, prefix: str, eps: float, bits: int) -> tuple[list, list]:
    """y = qkv_proj(rms_norm(x, input_norm))."""
    from onnx import helper, numpy_helper

    nodes = [helper.make_node("SimplifiedLayerNormalization", [x, prefix + "input_norm"], [prefix + "normed"],
                              axis=-1, epsilon=eps)]
    initializers = [numpy_helper.from_array(layer.input_norm, prefix + "input_norm")]
    more_nodes, more_initializers = matmul_nodes(layer.qkv_proj, bits, prefix + "normed", y, prefix + "qkv_")
    return nodes + more_nodes, initializers + more_initializers


def _tail_graph(index: int, layer, following, eps: float, bits: int):
    from onnx import helper, numpy_helper

    p = f"l{index}_"
    intermediate = layer.down_proj.shape[1]
    nodes, initializers = [], [numpy_helper.from_array(layer.post_attention_norm, p + "post_norm"),
                               numpy_helper.from_array(np.array([intermediate, intermediate], dtype=np.int64),
                                                       p + "split")]

    def add(part):
        nodes.extend(part[0])
        initializers.extend(part[1])

    add(matmul_nodes(layer.o_proj, bits, "attention_out", p + "attended", p + "o_"))
    nodes += [helper.make_node("Add", ["x", p + "attended"], [p + "mid"]),
              helper.make_node("SimplifiedLayerNormalization", [p + "mid", p + "post_norm"], [p + "mlp_in"],
                               axis=-1, epsilon=eps)]
    add(matmul_nodes(layer.gate_up_proj, bits, p + "mlp_in", p + "gate_up", p + "gate_up_"))
    nodes += [helper.make_node("Split", [p + "gate_up", p + "split"], [p + "gate", p + "up"], axis=-1),
              helper.make_node("Sigmoid", [p + "gate"], [p + "gate_sigmoid"]),
              helper.make_node("Mul", [p + "gate", p + "gate_sigmoid"], [p + "gate_silu"]),
              helper.make_node("Mul", [p + "gate_silu", p + "up"], [p + "mlp_hidden"])]
    add(matmul_nodes(layer.down_proj, bits, p + "mlp_hidden", p + "mlp_out", p + "down_"))
    nodes.append(helper.make_node("Add", [p + "mid", p + "mlp_out"], ["x_out"]))
    outputs = ["x_out"]
    if following is not None:
        add(_norm_matmul(following, "x_out", "next_qkv", f"l{index + 1}_", eps, bits))
        outputs.append("next_qkv")
    hidden = layer.o_proj.shape[0]
    return _graph(f"layer_{index}", ["x", "attention_out"], outputs, nodes, initializers,
                  widths={"x": hidden, "attention_out": layer.o_proj.shape[1], "x_out": hidden,
                          "next_qkv": following.qkv_proj.shape[0] if following is not None else 0})


def _graph(name: str, inputs: list[str], outputs: list[str], nodes, initializers, widths=None):
    from onnx import TensorProto, helper

    def value(tensor):
        return helper.make_tensor_value_info(tensor, TensorProto.FLOAT, ["rows", (widths or {}).get(tensor)])

    return helper.make_graph(nodes, name, [value(t) for t in inputs], [value(t) for t in outputs], initializers)
