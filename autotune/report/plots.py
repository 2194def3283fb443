"""The report's figures (PNG, matplotlib with the Agg backend): Pareto trade-off, history, importance.

Every figure reads the study view alone. The figures live in :mod:`autotune.report.pareto_plot` and
:mod:`autotune.report.history_plots`, what they share in :mod:`autotune.report.plot_common` and
:mod:`autotune.report.trial_markers`; this module writes them all and keeps the names importable from here.
"""

from __future__ import annotations

from pathlib import Path

from autotune.records import StudyView
from autotune.report.history_plots import history_plot, hypervolume, importance_plot
from autotune.report.pareto_plot import pareto_plot
from autotune.report.plot_common import axis_label, pretty
from autotune.report.trial_markers import DEPTH_COLOURS, PRECISION_MARKERS, variant
from autotune.report.trial_markers import _variant_styles as _variant_styles  # tests/report/test_depth_precision_plot.py
from autotune.selection import Selection

__all__ = ["DEPTH_COLOURS", "PRECISION_MARKERS", "axis_label", "history_plot", "hypervolume",
           "importance_plot", "pareto_plot", "pretty", "variant", "write_plots"]


def write_plots(view: StudyView, selection: Selection, report_dir: Path) -> dict[str, Path]:
    """pareto.png, history.png and (when there is enough to say) importance.png under ``report_dir``."""
    report_dir.mkdir(parents=True, exist_ok=True)
    files = {"pareto.png": pareto_plot(view, selection, report_dir / "pareto.png"),
             "history.png": history_plot(view, report_dir / "history.png")}
    importance = importance_plot(view, report_dir / "importance.png")
    if importance is not None:
        files["importance.png"] = importance
    else:
        (report_dir / "importance.png").unlink(missing_ok=True)  # no stale figure from an earlier report
    return files
