"""Block-quantized linear layers for the reference engine: onnxruntime's MatMulNBits on the CPU.

`weights:` in engine.yaml picks the format of the target's linear layers:
- `float32`: numpy, exact (llama.linear);
- `int8`: every linear layer 8-bit, blocks of 32 inputs with one float32 scale each
  (llama.cpp's Q8_0 quantizer: absmax / 127);
- `q4`: the decoder layers 4-bit, blocks of 32 with a scale and a minimum each (llama.cpp's
  Q4_1 quantizer: min + 15 steps); the LM head and the EAGLE-3 head stay 8-bit.
The packaged SmolLM2 GGUF stores its decoder layers as Q4_1 and its (tied) embedding as Q8_0,
so `q4` holds the float32 checkpoint's weights exactly; what changes is the activations, which
MatMulNBits' accuracy level 4 quantizes to int8 per block of 32 (as llama.cpp does) for integer
dot products. That is what makes a 1-16 row step 3-4x faster than numpy's float32 GEMV/GEMM.

MatMulNBits computes scale * (q - zero_point) with an integer zero point, which cannot hold
Q4_1's float minimum; so each 4-bit layer adds the minimum as a correction: y = MatMulNBits(x)
+ blocksum(x) @ minimum.T, a matmul 32x smaller than the layer. A float zero point would hold
it directly, but onnxruntime 1.32 then dequantizes the whole matrix on every call (~70x slower).
"""
from __future__ import annotations

import os

import numpy as np

WEIGHT_FORMATS = ("float32", "int8", "q4")
BLOCK = 32               # inputs per quantization block (llama.cpp's Q4_1 / Q8_0 block)
ACCURACY_INT8 = 4        # MatMulNBits accuracy_level 4: int8 activations, integer dot products

def quantize_q4(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(out, in) float32 -> packed 4-bit codes (out, in/32, 16), scales, minimums (out, in/32).

    weight ~= scale * code + minimum per block of 32 inputs; exact for weights that came from Q4_1.
    """
    out_features, in_features = weight.shape
    blocks = weight.reshape(out_features, in_features // BLOCK, BLOCK).astype(np.float32)
    minimum, maximum = blocks.min(axis=-1), blocks.max(axis=-1)
    scale = (maximum - minimum) / 15
    safe_scale = np.where(scale == 0, 1, scale)
    codes = np.clip(np.rint((blocks - minimum[..., None]) / safe_scale[..., None]), 0, 15).astype(np.uint8)
    return codes[..., 0::2] | (codes[..., 1::2] << 4), scale.astype(np.float32), minimum.astype(np.float32)


def quantize_int8(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(out, in) float32 -> codes offset by 128 (out, in/32, 32) uint8, scales (out, in/32).

    weight ~= scale * (code - 128) per block of 32 inputs; exact for weights that came from Q8_0.
    """
    out_features, in_features = weight.shape
    blocks = weight.reshape(out_features, in_features // BLOCK, BLOCK).astype(np.float32)
    scale = np.abs(blocks).max(axis=-1) / 127
    safe_scale = np.where(scale == 0, 1, scale)
    codes = np.clip(np.rint(blocks / safe_scale[..., None]), -127, 127).astype(np.int16) + 128
    return codes.astype(np.uint8), scale.astype(np.float32)


def dequantize_q4(packed: np.ndarray, scale: np.ndarray, minimum: np.ndarray) -> np.ndarray:
    codes = np.empty(packed.shape[:-1] + (BLOCK,), dtype=np.float32)
    codes[..., 0::2], codes[..., 1::2] = packed & 15, packed >> 4
    return (codes * scale[..., None] + minimum[..., None]).reshape(packed.shape[0], -1)


def dequantize_int8(codes: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return ((codes.astype(np.float32) - 128) * scale[..., None]).reshape(codes.shape[0], -1)


class BlockQuantizedLinear:
    """x (N, in) float32 -> (N, out): one onnxruntime session holding one weight matrix."""

    def __init__(self, weight: np.ndarray, bits: int):
        from onnx import TensorProto, helper

        out_features, in_features = weight.shape
        self.shape = (out_features, in_features)
        self.bits = bits
        nodes, initializers = matmul_nodes(weight, bits, "x", "y", "")
        graph = helper.make_graph(
            nodes, "block_quantized_linear",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", in_features])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", out_features])], initializers)
        self._session = make_session(graph)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._session.run(None, {"x": np.ascontiguousarray(x, dtype=np.float32)})[0]


def quantized_linear(weight: np.ndarray, weight_format: str, keep_8bit: bool = False):
    """The linear op for `weight` under `weight_format`: the float32 array itself or a quantized layer.

    keep_8bit: an LM head or a draft head's layer: 8-bit under q4 too (they carry more of the quality per byte).
    """
    check_weight_format(weight_format)
    if weight_format == "float32":
        return weight
    return BlockQuantizedLinear(weight, bits_of(weight_format, keep_8bit))


def check_weight_format(weight_format: str) -> None:
    if weight_format not in WEIGHT_FORMATS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHT_FORMATS)}, got {weight_format!r}")


def bits_of(weight_format: str, keep_8bit: bool = False) -> int:
    return 4 if weight_format == "q4" and not keep_8bit else 8


def matmul_nodes(weight: np.ndarray, bits: int, x: str, y: str, prefix: str) -> tuple[list, list]:
    """ONNX nodes and initializers computing y = x @ weight.T block-quantized; names start with `prefix`."""
    from onnx import helper, numpy_helper

    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, got {bits}")
    out_features, in_features = weight.shape
    if in_features % BLOCK:
        raise ValueError(f"in_features {in_features} must be a multiple of the block size {BLOCK}")
    num_blocks = in_features // BLOCK
    attributes = dict(K=in_features, N=out_features, bits=bits, block_size=BLOCK, accuracy_level=ACCURACY_INT8)
    if bits == 8:
        codes, scale = quantize_int8(weight)
        zero_points = np.full(out_features * num_blocks, 128, dtype=np.uint8)
    else:
        codes, scale, minimum = quantize_q4(weight)
        zero_points = np.zeros(out_features * ((num_blocks + 1) // 2), dtype=np.uint8)   # two per byte
    def name(part: str) -> str:
        return prefix + part

    initializers = [numpy_helper.from_array(codes, name("codes")),
                    numpy_helper.from_array(scale.reshape(-1), name("scales")),
                    numpy_helper.from_array(zero_points, name("zero_points"))]
    product = y if bits == 8 else name("scaled_codes")
    nodes = [helper.make_node("MatMulNBits", [x, name("codes"), name("scales"), name("zero_points")], [product],
                              domain="com.microsoft", **attributes)]
    if bits == 4:
        initializers += [numpy_helper.from_array(np.array([-1, num_blocks, BLOCK], dtype=np.int64), name("block_shape")),
                         numpy_helper.from_array(np.array([2], dtype=np.int64), name("within_block")),
                         numpy_helper.from_array(np.ascontiguousarray(minimum.T), name("minimum_t"))]
        nodes += [helper.make_node("Reshape", [x, name("block_shape")], [name("x_blocks")]),
                  helper.make_node("ReduceSum", [name("x_blocks"), name("within_block")], [name("block_sums")],
                                   keepdims=0),
                  helper.make_node("MatMul", [name("block_sums"), name("minimum_t")], [name("minimum_part")]),
                  helper.make_node("Add", [product, name("minimum_part")], [y])]
    return nodes, initializers


def make_session(graph):
    """An onnxruntime CPU session running `graph` (opset 21 + com.microsoft)."""
    import onnxruntime
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])
    options = onnxruntime.SessionOptions()
    # Each session owns a pool of one thread per core whose threads sleep between calls. Spinning
    # (onnxruntime's default, and the only choice for its process-wide pool) keeps a waiting thread
    # busy on one of the two cores while numpy's attention and the other sessions run: measured on
    # the 2-core box, a whole q4 forward took 2-3x longer with the shared spinning pool.
    options.intra_op_num_threads = len(os.sched_getaffinity(0))
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # Without the arena a call's intermediates are freed after it: with one arena per session each
    # kept its largest prefill's buffers (measured: 1.4 GB -> 4.5 GB RSS after a 1,500-token prompt).
    options.enable_cpu_mem_arena = False
    return onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
