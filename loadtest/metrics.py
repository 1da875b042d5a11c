"""Per-request and per-run figures from raw samples (definitions of genai-perf/aiperf).

- TTFT: first response with non-empty text − request sent.
- ITL: (E2E latency − TTFT) / (output tokens − 1). A response can carry several tokens
  (accepted drafts), so ITL divides by tokens; the raw gap between responses is the
  inter-chunk latency (ICL), reported beside it.
- Per-user tokens/s = 1 / ITL (excludes TTFT); E2E tokens/s = output tokens / E2E latency.
- Output token throughput = tokens received / (first request sent → last response
  received); request throughput = completed requests / the same window. Tokens of streams
  cut at the end of the run count (they were served inside the window); their latencies
  do not (they never finished).
- Acceptance length = 1 + accepted drafts / drafting steps, summed over requests (a
  request's steps weigh as much as they took), not a mean of per-request ratios.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from loadtest.samples import CUT_AT_END, FAILED, OK, RequestSample

PERCENTILES = (50, 90, 99)
MTBENCH_ORDER = ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")


@dataclass(frozen=True)
class RequestMetrics:
    ttft_s: float | None
    e2e_s: float | None
    itl_s: float | None
    icl_s: list[float]
    output_tokens: int
    user_tokens_per_s: float | None
    e2e_tokens_per_s: float | None

    def as_dict(self) -> dict:
        return {"ttft_s": self.ttft_s, "e2e_s": self.e2e_s, "itl_s": self.itl_s,
                "user_tokens_per_s": self.user_tokens_per_s, "e2e_tokens_per_s": self.e2e_tokens_per_s}


def request_metrics(sample: RequestSample) -> RequestMetrics:
    ttft = next((at for at, chars in zip(sample.chunk_s, sample.chunk_chars) if chars > 0), None)
    # the final response's count is authoritative; the chunks' sum covers cut streams
    output_tokens = sample.output_tokens if sample.output_tokens is not None else sample.received_tokens
    e2e = sample.end_s
    itl = None
    if ttft is not None and e2e is not None and output_tokens > 1:
        itl = (e2e - ttft) / (output_tokens - 1)
    content_s = [at for at, tokens, chars in zip(sample.chunk_s, sample.chunk_tokens, sample.chunk_chars)
                 if tokens > 0 or chars > 0]
    icl = [later - earlier for earlier, later in zip(content_s, content_s[1:])]
    return RequestMetrics(
        ttft_s=ttft, e2e_s=e2e, itl_s=itl, icl_s=icl, output_tokens=output_tokens,
        user_tokens_per_s=1.0 / itl if itl else None,
        e2e_tokens_per_s=output_tokens / e2e if e2e else None)


def distribution(values: Iterable[float | None]) -> dict:
    """p50/p90/p99, mean, min, max and count of the values present (None ignored)."""
    present = np.asarray([v for v in values if v is not None], dtype=float)
    if present.size == 0:
        return {**{f"p{p}": None for p in PERCENTILES}, "mean": None, "min": None, "max": None, "count": 0}
    result = {f"p{p}": float(np.percentile(present, p)) for p in PERCENTILES}
    result.update(mean=float(present.mean()), min=float(present.min()), max=float(present.max()),
                  count=int(present.size))
    return result


def run_window(samples: Sequence[RequestSample]) -> tuple[float, float] | None:
    """(first request sent, last response received), epoch seconds, over requests that got
    any response; None when none did."""
    answered = [s for s in samples if s.chunk_s]
    if not answered:
        return None
    return (min(s.start_time for s in answered),
            max(s.start_time + max(s.chunk_s[-1], s.end_s or 0.0) for s in answered))


def _windowed_rates(events: list[tuple[float, float]], start: float, end: float, window_s: float) -> list[float]:
    """Per-window sums / window_s over the full windows of [start, end)."""
    full_windows = int((end - start) // window_s)
    if full_windows == 0:
        return []
    totals = np.zeros(full_windows)
    for at, amount in events:
        index = int((at - start) // window_s)
        if 0 <= index < full_windows:
            totals[index] += amount
    return list(totals / window_s)


def throughput(samples: Sequence[RequestSample], window_s: float = 1.0) -> dict:
    """Output tokens/s and requests/s over the run window, plus their p50/p90/p99 over
    `window_s`-long windows (full windows only)."""
    window = run_window(samples)
    empty = {"overall": 0.0, **{f"p{p}": None for p in PERCENTILES}, "window_s": window_s}
    if window is None:
        return {"duration_s": 0.0, "output_tokens": 0, "completed": 0,
                "output_tokens_per_s": dict(empty), "request_throughput": dict(empty)}
    start, end = window
    duration = max(end - start, 1e-9)
    token_events = [(s.start_time + at, tokens) for s in samples for at, tokens in zip(s.chunk_s, s.chunk_tokens)]
    completions = [(s.start_time + s.end_s, 1.0) for s in samples if s.outcome == OK and s.end_s is not None]
    output_tokens = sum(tokens for _, tokens in token_events)

    def rate(events, total):
        per_window = _windowed_rates(events, start, end, window_s)
        summary = distribution(per_window) if per_window else {}
        return {"overall": total / duration, **{f"p{p}": summary.get(f"p{p}") for p in PERCENTILES},
                "window_s": window_s}

    return {"duration_s": duration, "output_tokens": int(output_tokens), "completed": len(completions),
            "output_tokens_per_s": rate(token_events, output_tokens),
            "request_throughput": rate(completions, len(completions))}


def drafting_steps(sample: RequestSample) -> int:
    """Engine steps that verified a draft, recovered from the final response's stats."""
    if not sample.total_draft_tokens:
        return 0   # drafting off (or no decode step at all)
    accepted = sample.total_accepted_draft_tokens or 0
    if accepted and sample.acceptance_length and sample.acceptance_length > 1.0:
        return round(accepted / (sample.acceptance_length - 1.0))
    # nothing accepted: every decode step gave one token, after the prefill's first
    return max((sample.output_tokens or 0) - 1, 0)


def acceptance_length(samples: Sequence[RequestSample]) -> dict:
    """Overall and per category, over completed requests that carry the stats."""
    with_stats = [s for s in samples if s.outcome == OK and s.acceptance_length is not None]

    def pooled(group: list[RequestSample]) -> float | None:
        if not group:
            return None
        steps = sum(drafting_steps(s) for s in group)
        accepted = sum(s.total_accepted_draft_tokens or 0 for s in group)
        # no drafting steps (drafting off): one token per step, as the engine reports
        return 1.0 + accepted / steps if steps else 1.0

    categories = sorted({s.category for s in with_stats}, key=category_sort_key)
    return {
        "overall": pooled(with_stats),
        "by_category": {c: pooled([s for s in with_stats if s.category == c]) for c in categories},
        "requests": len(with_stats),
        "drafting_steps": sum(drafting_steps(s) for s in with_stats),
        "accepted_draft_tokens": sum(s.total_accepted_draft_tokens or 0 for s in with_stats),
        "draft_tokens": sum(s.total_draft_tokens or 0 for s in with_stats),
    }


def category_sort_key(category: str) -> tuple[int, str]:
    """MT-Bench categories in the model cards' order, then the rest by name."""
    return (MTBENCH_ORDER.index(category), "") if category in MTBENCH_ORDER else (len(MTBENCH_ORDER), category)


def failures(samples: Sequence[RequestSample]) -> dict:
    failed = [s for s in samples if s.outcome == FAILED]
    by_reason = Counter(s.failure_reason or "unknown" for s in failed)
    examples: dict[str, str] = {}
    for s in failed:
        examples.setdefault(s.failure_reason or "unknown", (s.error or "")[:300])
    return {"count": len(failed), "by_reason": dict(by_reason.most_common()), "examples": examples}


def summarize(samples: Sequence[RequestSample], window_s: float = 1.0) -> dict:
    """The run's figures, as report.json holds them."""
    completed = [s for s in samples if s.outcome == OK]
    per_request = [request_metrics(s) for s in completed]
    rates = throughput(samples, window_s)
    return {
        "requests": {"sent": len(samples), "completed": len(completed),
                     "failed": sum(s.outcome == FAILED for s in samples),
                     "cut_at_end": sum(s.outcome == CUT_AT_END for s in samples)},
        "failures": failures(samples),
        "duration_s": rates["duration_s"],
        "output_tokens": rates["output_tokens"],
        "output_tokens_per_s": rates["output_tokens_per_s"],
        "request_throughput": rates["request_throughput"],
        "ttft_s": distribution(m.ttft_s for m in per_request),
        "itl_s": distribution(m.itl_s for m in per_request),
        "inter_chunk_latency_s": distribution(gap for m in per_request for gap in m.icl_s),
        "e2e_latency_s": distribution(m.e2e_s for m in per_request),
        "user_tokens_per_s": distribution(m.user_tokens_per_s for m in per_request),
        "e2e_tokens_per_s": distribution(m.e2e_tokens_per_s for m in per_request),
        "output_tokens_per_request": distribution(m.output_tokens for m in per_request),
        "input_tokens_per_request": distribution(s.input_tokens for s in completed),
        "tokens_per_response": distribution(tokens for s in completed for tokens in s.chunk_tokens if tokens),
        "acceptance_length": acceptance_length(samples),
    }
