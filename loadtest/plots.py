"""PNG plots of a run and of a concurrency sweep (matplotlib, no display needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from loadtest.metrics import category_sort_key


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")   # headless: Locust masters and CI have no display
    import matplotlib.pyplot as plt

    return plt


def latency_distributions(ttft_s: Sequence[float], itl_s: Sequence[float], path: Path, title: str) -> Path:
    """Histograms of TTFT and ITL over completed requests, p50/p90/p99 marked."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for axis, values, label in ((axes[0], ttft_s, "TTFT (ms)"), (axes[1], itl_s, "ITL (ms per token)")):
        values_ms = np.asarray(values, dtype=float) * 1000
        axis.set_xlabel(label)
        axis.set_ylabel("requests")
        if values_ms.size == 0:
            axis.text(0.5, 0.5, "no completed requests", ha="center", va="center", transform=axis.transAxes)
            continue
        axis.hist(values_ms, bins=min(40, max(5, values_ms.size // 2)), color="#4c72b0", alpha=0.85)
        for percentile, style in ((50, "-"), (90, "--"), (99, ":")):
            value = np.percentile(values_ms, percentile)
            axis.axvline(value, color="#c44e52", linestyle=style, label=f"p{percentile} {value:.1f} ms")
        axis.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def acceptance_by_category(by_category: dict[str, float | None], overall: float | None, path: Path,
                           title: str) -> Path:
    """Acceptance length per category in the model cards' order, then overall."""
    plt = _pyplot()
    categories = sorted((c for c, v in by_category.items() if v is not None), key=category_sort_key)
    labels = categories + (["overall"] if overall is not None else [])
    values = [by_category[c] for c in categories] + ([overall] if overall is not None else [])
    figure, axis = plt.subplots(figsize=(max(5, 1.0 * len(labels) + 2), 4))
    colors = ["#4c72b0"] * len(categories) + ["#55a868"] * (overall is not None)
    bars = axis.bar(labels, values, color=colors)
    axis.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=8)
    axis.set_ylabel("acceptance length (tokens / step)")
    axis.set_ylim(0, max([1.0] + values) * 1.2)
    axis.axhline(1.0, color="grey", linewidth=0.8)
    axis.set_title(title)
    plt.setp(axis.get_xticklabels(), rotation=30, ha="right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def pareto(curves: dict[str, list[dict]], path: Path, title: str) -> Path:
    """Total output tokens/s against per-user tokens/s, one point per concurrency level,
    one curve per configuration (e.g. drafting on / off). Each point: {"users",
    "user_tokens_per_s", "output_tokens_per_s"}."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 5))
    for (label, points), marker in zip(curves.items(), "os^vD"):
        points = [p for p in points if p.get("user_tokens_per_s") is not None]
        points.sort(key=lambda p: p["users"])
        xs = [p["user_tokens_per_s"] for p in points]
        ys = [p["output_tokens_per_s"] for p in points]
        axis.plot(xs, ys, marker=marker, label=label)
        for p, x, y in zip(points, xs, ys):
            axis.annotate(str(p["users"]), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    axis.set_xlabel("per-user output tokens/s (p50 of 1/ITL)")
    axis.set_ylabel("total output tokens/s")
    axis.set_title(title)
    axis.grid(True, alpha=0.3)
    axis.legend(title="labels: concurrent users", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
