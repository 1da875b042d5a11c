"""Load-test figures computed from hand-made samples: the genai-perf definitions, the run
window, pooled acceptance length, failure accounting and the report's tables."""
from __future__ import annotations

import json

import numpy as np
import pytest

from loadtest.metrics import acceptance_length, distribution, drafting_steps, request_metrics, summarize, throughput
from loadtest.report import acceptance_table, build_report, markdown, write_report
from loadtest.samples import (CUT_AT_END, ERROR_MID_STREAM, SERVER_DOWN, TIMEOUT, RequestSample, SampleLog,
                              read_samples)


def completed(start=100.0, chunk_s=(0.5, 0.7, 0.9, 1.3), chunk_tokens=(1, 3, 2, 4), chunk_chars=(3, 9, 6, 11),
              category="writing", accepted=0, acceptance=1.0, draft_tokens=None, protocol="grpc") -> RequestSample:
    sample = RequestSample(protocol, category, "p", start)
    for at, tokens, chars in zip(chunk_s, chunk_tokens, chunk_chars):
        sample.add_chunk(at, tokens, chars)
    sample.end_s = chunk_s[-1]
    sample.finish_reason = "length"
    sample.output_tokens = sum(chunk_tokens)
    sample.input_tokens = 40
    sample.total_accepted_draft_tokens = accepted
    sample.acceptance_length = acceptance
    sample.total_draft_tokens = 3 * (sample.output_tokens - 1) if draft_tokens is None else draft_tokens
    return sample


def failed(reason, start=100.0, chunks=()) -> RequestSample:
    sample = RequestSample("http", "writing", "p", start)
    for at, tokens in chunks:
        sample.add_chunk(at, tokens, 1)
    sample.fail(reason, f"{reason} happened", 2.0)
    return sample


def test_ttft_is_the_first_response_with_text_and_itl_divides_by_tokens():
    # the first response carried a token but no text yet (an incomplete UTF-8 character)
    sample = completed(chunk_s=(0.5, 0.7, 0.9, 1.3), chunk_tokens=(1, 3, 2, 4), chunk_chars=(0, 9, 6, 11))
    metrics = request_metrics(sample)
    assert metrics.ttft_s == pytest.approx(0.7)
    assert metrics.e2e_s == pytest.approx(1.3)
    assert metrics.output_tokens == 10
    assert metrics.itl_s == pytest.approx((1.3 - 0.7) / 9)
    assert metrics.user_tokens_per_s == pytest.approx(9 / 0.6)
    assert metrics.e2e_tokens_per_s == pytest.approx(10 / 1.3)
    # inter-chunk latency: raw gaps between responses, whatever they carried
    assert metrics.icl_s == pytest.approx([0.2, 0.2, 0.4])


def test_one_token_answer_has_ttft_but_no_itl():
    metrics = request_metrics(completed(chunk_s=(0.4,), chunk_tokens=(1,), chunk_chars=(2,)))
    assert metrics.ttft_s == pytest.approx(0.4)
    assert metrics.itl_s is None and metrics.user_tokens_per_s is None
    assert metrics.e2e_tokens_per_s == pytest.approx(1 / 0.4)


def test_distribution_uses_raw_values_not_buckets():
    values = list(range(1, 101))
    summary = distribution(values + [None])
    assert summary["p50"] == pytest.approx(50.5)
    assert summary["p90"] == pytest.approx(np.percentile(values, 90))
    assert summary["p99"] == pytest.approx(99.01)
    assert (summary["min"], summary["max"], summary["count"]) == (1, 100, 100)
    assert distribution([])["p50"] is None and distribution([])["count"] == 0


def test_throughput_window_runs_from_first_request_sent_to_last_response():
    first = completed(start=100.0, chunk_s=(0.5, 1.0), chunk_tokens=(1, 4), chunk_chars=(1, 1))
    second = completed(start=101.0, chunk_s=(0.5, 2.0), chunk_tokens=(2, 3), chunk_chars=(1, 1))
    cut = RequestSample("grpc", "writing", "p", 102.0, outcome=CUT_AT_END)
    cut.add_chunk(0.5, 2, 1)
    refused = failed(SERVER_DOWN, start=90.0)     # never answered: does not stretch the window
    rates = throughput([first, second, cut, refused], window_s=1.0)
    assert rates["duration_s"] == pytest.approx(3.0)            # 100.0 → 103.0
    assert rates["output_tokens"] == 12                         # the cut stream's tokens were served
    assert rates["output_tokens_per_s"]["overall"] == pytest.approx(12 / 3.0)
    assert rates["request_throughput"]["overall"] == pytest.approx(2 / 3.0)
    # per 1-s windows: [100,101): 1, [101,102): 4+2, [102,103): 2; the tokens at 103.0 end the run
    assert rates["output_tokens_per_s"]["p50"] == pytest.approx(2.0)
    assert rates["output_tokens_per_s"]["window_s"] == 1.0


def test_throughput_of_a_run_where_nothing_answered_is_zero():
    rates = throughput([failed(SERVER_DOWN), failed(SERVER_DOWN, start=101)])
    assert rates["output_tokens_per_s"]["overall"] == 0.0
    assert rates["request_throughput"]["overall"] == 0.0
    assert rates["duration_s"] == 0.0


def test_drafting_steps_are_recovered_from_the_final_stats():
    # 1 prefill token + 3 steps that each kept 2 drafts + a bonus token = 10 tokens
    assert drafting_steps(completed(accepted=6, acceptance=3.0)) == 3
    # nothing accepted: one token per step after the first
    assert drafting_steps(completed(accepted=0, acceptance=1.0)) == 9
    assert drafting_steps(completed(accepted=0, acceptance=1.0, draft_tokens=0)) == 0


def test_acceptance_length_pools_steps_instead_of_averaging_ratios():
    long_good = completed(accepted=6, acceptance=3.0, category="math")          # 6 accepted / 3 steps
    short_bad = completed(chunk_s=(0.5, 0.9), chunk_tokens=(1, 4), chunk_chars=(1, 1),
                          accepted=0, acceptance=1.0, category="writing")   # 0 accepted / 4 steps
    result = acceptance_length([long_good, short_bad])
    assert result["overall"] == pytest.approx(1 + 6 / 7)      # not the mean of 3.0 and 1.0
    assert result["by_category"] == {"writing": pytest.approx(1.0), "math": pytest.approx(3.0)}
    assert (result["drafting_steps"], result["accepted_draft_tokens"]) == (7, 6)


def test_acceptance_length_with_drafting_off_is_one_token_per_step():
    result = acceptance_length([completed(draft_tokens=0), completed(draft_tokens=0)])
    assert result["overall"] == 1.0 and result["drafting_steps"] == 0


def test_acceptance_ignores_failed_and_cut_requests():
    partial = completed(accepted=9, acceptance=4.0)
    partial.outcome = CUT_AT_END
    result = acceptance_length([completed(accepted=0), partial, failed(TIMEOUT)])
    assert result["overall"] == 1.0 and result["requests"] == 1


def test_summary_counts_outcomes_and_failure_reasons():
    mid = failed(ERROR_MID_STREAM, chunks=[(0.3, 1)])
    samples = [completed(), completed(start=101), failed(SERVER_DOWN), failed(SERVER_DOWN), failed(TIMEOUT), mid,
               RequestSample("grpc", "writing", "p", 102.0, outcome=CUT_AT_END)]
    summary = summarize(samples)
    assert summary["requests"] == {"sent": 7, "completed": 2, "failed": 4, "cut_at_end": 1}
    assert summary["failures"]["count"] == 4
    assert summary["failures"]["by_reason"] == {SERVER_DOWN: 2, TIMEOUT: 1, ERROR_MID_STREAM: 1}
    assert summary["failures"]["examples"][TIMEOUT] == "timeout happened"
    # latencies come from completed requests only
    assert summary["ttft_s"]["count"] == 2
    assert summary["tokens_per_response"]["max"] == 4


def test_acceptance_table_follows_the_model_cards_column_order():
    table = acceptance_table({"overall": 2.0, "by_category": {"math": 2.75, "writing": 2.1, "user": 1.5}})
    assert table[0] == "| writing | math | user | overall |"
    assert table[2] == "| 2.10 | 2.75 | 1.50 | 2.00 |"


def test_markdown_report_names_failures_and_cut_streams():
    report = build_report([completed(accepted=6, acceptance=3.0), failed(SERVER_DOWN)],
                          {"workload": "mt-bench", "users": 2, "run_time": "10s"})
    text = markdown(report)
    assert "# Load test: mt-bench over grpc+http, 2 users, 10s" in text
    assert "| server down | 1 | server down happened |" in text
    assert "| TTFT | ms | 500 |" in text


def test_samples_round_trip_through_jsonl_and_the_report_is_written(tmp_path):
    log = SampleLog(tmp_path / "samples.jsonl", extra=lambda s: request_metrics(s).as_dict())
    originals = [completed(accepted=6, acceptance=3.0, category="math"), failed(TIMEOUT)]
    for sample in originals:
        log.write(sample)
    log.close()
    assert read_samples(tmp_path / "samples.jsonl") == originals
    row = json.loads((tmp_path / "samples.jsonl").read_text().splitlines()[0])
    assert row["ttft_s"] == pytest.approx(0.5)     # derived figures written beside the raw ones
    report = write_report(tmp_path, {"workload": "mt-bench"})
    assert json.loads((tmp_path / "report.json").read_text()) == report
    assert report["acceptance_length"]["by_category"] == {"math": pytest.approx(3.0)}
    assert report["failures"]["by_reason"] == {TIMEOUT: 1}
    for name in ("report.md", "latency_distributions.png", "acceptance_by_category.png"):
        assert (tmp_path / name).stat().st_size > 0
