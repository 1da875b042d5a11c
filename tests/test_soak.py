"""`triton-eagle soak`, shortened: every kind of request ends, and the figures are reported."""
from __future__ import annotations

import json

import pytest

from triton_eagle.cli import main
from triton_eagle.soak import MIX

pytestmark = pytest.mark.triton


def test_a_short_soak_loses_no_request_and_reports_every_server_process(tmp_path):
    report_path = tmp_path / "soak.json"
    # growth targets are for thousands of requests: a short run only checks the bookkeeping
    main(["soak", "--requests", "60", "--warmup", "12", "--concurrency", "6", "--max-rss-growth", "10",
          "--json", str(report_path)])
    report = json.loads(report_path.read_text())
    outcomes = report["outcomes"]
    assert sum(outcomes.values()) == 60
    assert not [key for key in outcomes if key.endswith((":lost", ":unexpected_error", ":not_refused"))], outcomes
    assert {key.split(":")[0] for key in outcomes} == set(MIX)
    names = {row["process"] for row in report["processes"]}
    assert {"tritonserver", "stub:tensorrt_llm", "stub:preprocessing", "stub:postprocessing"} <= names
    assert all(row["rss_start_mib"] > 0 and row["fds_start"] > 0 for row in report["processes"])
    assert report["shm_regions_start"] >= 3 and report["shm_regions_end"] == report["shm_regions_start"]
