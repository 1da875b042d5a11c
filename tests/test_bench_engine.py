"""bench-engine's report: which weights ran, and float32 beside them in the same run."""
from __future__ import annotations

import asyncio

import yaml

from triton_eagle.bench_engine import bench


def test_quantized_bench_reports_its_weights_and_float32_from_the_same_run(tmp_path, smollm2_dir, eagle3_head_dir):
    config_path = tmp_path / "engine.yaml"
    config_path.write_text(yaml.safe_dump({
        "model": str(smollm2_dir), "reference": {"weights": "q4"}, "max_seq_len": 512,
        "speculative_config": {"decoding_type": "Eagle", "max_draft_len": 3,
                               "speculative_model_dir": str(eagle3_head_dir)},
    }))
    report = asyncio.run(bench(str(config_path), [1], max_tokens=6, per_level=1))
    assert report["weights"] == "q4"
    for table in (report["concurrency"], report["float32"]["concurrency"]):
        assert table["1"]["draft_off_tokens_per_s"] > 0 and table["1"]["draft_on_tokens_per_s"] > 0
    assert report["best_over_float32_draft_off"]["1"] > 0
    assert report["greedy_identical"] is True
