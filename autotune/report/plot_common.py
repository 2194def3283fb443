"""What every report figure shares: colours, metric names on the axes, the Agg backend, the atomic PNG write.

matplotlib is imported inside :func:`pyplot` so that the rest of autotune does not pay for it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from autotune.fileio import atomic_write
from autotune.records import MetricValue, StudyView

__all__ = ["BASELINE", "DPI", "FEASIBLE", "FIGSIZE", "FRONT", "INFEASIBLE", "SELECTED", "axis_label", "base_value", "ci_bar",
           "empty", "pretty", "pyplot", "save", "study_title"]

FIGSIZE, DPI = (8.0, 5.0), 120
FEASIBLE, INFEASIBLE, FRONT, SELECTED, BASELINE = "#1f77b4", "#9a9a9a", "#ff7f0e", "#d62728", "#000000"
_PRETTY = [(r"^decode_ms_per_token_(\w+)$", r"decode latency \1"), (r"^ttft_ms_(\w+)$", r"time to first token \1"),
           (r"^e2e_ms_(\w+)$", r"end-to-end latency \1"), (r"^size_mb$", "model size"), (r"^peak_rss_mb$", "peak memory"),
           (r"^tokens_per_s$", "throughput"), (r"^macro_f1$", "macro F1")]


def pretty(metric: str) -> str:
    """A readable name for a metric key such as ``latency-decode_ms_per_token_p50``."""
    sub = metric.rsplit("-", 1)[-1]
    for pattern, repl in _PRETTY:
        if re.match(pattern, sub):
            return re.sub(pattern, repl, sub)
    return sub.replace("_", " ")


def axis_label(metric: str, unit: str | None) -> str:
    return f"{pretty(metric)} ({unit})" if unit else pretty(metric)


def study_title(view: StudyView) -> str:
    return view.name.replace("$", r"\$")  # no mathtext from a study name


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: Path) -> Path:
    """Tight layout, then write the PNG atomically (temp file, then rename)."""
    plt = pyplot()
    fig.tight_layout()
    try:
        # no URL in the PNG either
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None}))
    finally:
        plt.close(fig)
    return path


def base_value(metric: MetricValue | None) -> float | None:
    return None if metric is None else metric.value


def empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=12, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def ci_bar(ax: Any, x: float, y: float, metric: MetricValue | None, color: str) -> None:
    """A vertical error bar for the metric's 95% interval, when it has one."""
    if metric and metric.ci_low is not None and metric.ci_high is not None:
        ax.errorbar([x], [y], yerr=[[max(0.0, y - metric.ci_low)], [max(0.0, metric.ci_high - y)]], fmt="none", ecolor=color,
                    alpha=0.55, capsize=3, linewidth=1, zorder=2)
