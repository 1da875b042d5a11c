"""Block-quantized linear layers (reference.weights: int8 | q4): exact weights, kept quality, lossless drafting."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from python_backend.config import ConfigError, parse_engine_config
from python_backend.protocol import SamplingParams
from python_backend.reference.engine import ReferenceEngine
from python_backend.reference.fast_linear import (BlockQuantizedLinear, dequantize_int8, dequantize_q4, quantize_int8,
                                                  quantize_q4)
from test_engine import VARIED_PROMPTS, chat, run_concurrently
from triton_eagle.eval_quality import evaluate


def q4_1_weight(rng, out_features=64, in_features=96):
    """What llama.cpp's Q4_1 stores: per block of 32, scale * code + minimum, codes 0..15 (both ends used)."""
    blocks = in_features // 32
    codes = rng.integers(0, 16, (out_features, blocks, 32))
    codes[..., 0], codes[..., 1] = 0, 15
    scale = rng.uniform(0.001, 0.02, (out_features, blocks, 1)).astype(np.float16).astype(np.float32)
    minimum = rng.uniform(-0.2, 0.0, (out_features, blocks, 1)).astype(np.float16).astype(np.float32)
    return (codes * scale + minimum).astype(np.float32).reshape(out_features, in_features)


def test_q4_blocks_hold_gguf_q4_1_weights_exactly():
    weight = q4_1_weight(np.random.default_rng(0))
    assert np.array_equal(dequantize_q4(*quantize_q4(weight)), weight)


def test_int8_blocks_hold_gguf_q8_0_weights_exactly():
    rng = np.random.default_rng(1)
    codes = rng.integers(-127, 128, (48, 2, 32))
    codes[..., 0] = 127
    scale = rng.uniform(0.001, 0.01, (48, 2, 1)).astype(np.float16).astype(np.float32)
    weight = (codes * scale).astype(np.float32).reshape(48, 64)
    assert np.array_equal(dequantize_int8(*quantize_int8(weight)), weight)


@pytest.mark.parametrize("bits", [4, 8])
def test_quantized_layer_computes_the_matmul_up_to_int8_activation_rounding(bits):
    rng = np.random.default_rng(2)
    weight = q4_1_weight(rng)
    x = rng.standard_normal((5, weight.shape[1])).astype(np.float32)
    expected = x @ (dequantize_q4(*quantize_q4(weight)) if bits == 4 else dequantize_int8(*quantize_int8(weight))).T
    got = BlockQuantizedLinear(weight, bits)(x)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 0.02 * np.abs(expected).max()


def test_a_row_gets_the_same_result_alone_or_in_a_batch():
    """Why drafting stays lossless: verification (K+1 rows, many sequences) must equal decode (1 row)."""
    rng = np.random.default_rng(3)
    layer = BlockQuantizedLinear(q4_1_weight(rng, 128, 256), 4)
    x = rng.standard_normal((16, 256)).astype(np.float32)
    batched = layer(x)
    for row in range(16):
        assert np.array_equal(layer(x[row:row + 1])[0], batched[row])


def test_unknown_weight_format_fails_at_start_naming_the_key(smollm2_dir):
    with pytest.raises(ConfigError, match="reference.weights"):
        parse_engine_config({"model": str(smollm2_dir), "reference": {"weights": "int4"}})


def test_q4_perplexity_of_float32_answers_stays_within_one_percent(smollm2_dir):
    """eval-quality on a small set: MT-Bench first turns, float32's greedy answers scored by both."""
    report = evaluate(str(smollm2_dir), str(smollm2_dir), ["q4"], questions=8, answer_tokens=32,
                      agreement_tokens=16, max_change=0.01)
    q4 = report["weights"]["q4"]
    assert 1.0 < report["float32"]["perplexity"] and abs(q4["perplexity_change"]) <= 0.01, report
    assert q4["mean_common_prefix_tokens"] >= 4, report


@pytest.fixture(scope="module")
def q4_engines(smollm2_dir, eagle3_head_dir):
    config = parse_engine_config({
        "model": str(smollm2_dir), "reference": {"weights": "q4"},
        "max_batch_size": 16, "max_num_tokens": 4096, "max_seq_len": 512,
        "speculative_config": {"decoding_type": "Eagle", "max_draft_len": 3,
                               "speculative_model_dir": str(eagle3_head_dir)},
    })
    draft_on = ReferenceEngine.from_config(config)
    draft_off = ReferenceEngine(draft_on.target, None, draft_len=0, max_batch_size=16, max_num_tokens=4096,
                                max_seq_len=512)
    yield draft_on, draft_off
    draft_on.shutdown()
    draft_off.shutdown()


@pytest.mark.parametrize("concurrency", [1, 4, 16])
def test_q4_speculative_greedy_equals_q4_target_only_greedy(q4_engines, smollm2_dir, concurrency):
    from ensemble.tokenizer import load_tokenizer

    draft_on, draft_off = q4_engines
    tokenizer = load_tokenizer(smollm2_dir)
    prompts = [chat(tokenizer, text) for text in VARIED_PROMPTS]
    params = SamplingParams(max_tokens=20)
    expected = asyncio.run(run_concurrently(draft_off, prompts, params, 16))
    got = asyncio.run(run_concurrently(draft_on, prompts, params, concurrency))
    assert sum(len(tokens) for tokens in got) > 0
    for text, want, have in zip(VARIED_PROMPTS, expected, got):
        assert have == want, text
    assert "Paris" in tokenizer.decode(got[0])


def test_q4_verification_rows_equal_decode_steps_bit_for_bit(smollm2_dir):
    """One onnxruntime call per layer (quantized_layers) must keep each row independent of the others."""
    from python_backend.reference.llama import LlamaModel

    model = LlamaModel.from_pretrained(smollm2_dir, "q4")
    prompt, continuation = np.arange(100, 140), np.array([905, 28, 4461, 30, 216])
    verify_cache, decode_cache = model.new_cache(), model.new_cache()
    model.forward([prompt], [verify_cache], [1])
    model.forward([prompt], [decode_cache], [1])
    verified = model.forward([continuation], [verify_cache], [len(continuation)], [1, 14, -1])
    for row, token in enumerate(continuation):
        step = model.forward([continuation[row:row + 1]], [decode_cache], [1], [1, 14, -1])
        assert np.array_equal(verified.logits[0][row], step.logits[0][0])
        assert np.array_equal(verified.captured[0][row], step.captured[0][0])
