"""The search's progress figures: history.png (best so far and hypervolume by trial) and importance.png
(fANOVA parameter importance)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from autotune.records import ObjectiveSpec, StudyView, TrialRecord
from autotune.report.plot_common import BASELINE, FEASIBLE, FIGSIZE, FRONT, axis_label, base_value, empty, pretty, pyplot, save, study_title
from autotune.report.trial_markers import draw_trials, plotted

__all__ = ["history_figure", "history_plot", "hypervolume", "importance_plot"]

log = logging.getLogger("autotune")


def _losses(records: list[TrialRecord], objectives: list[ObjectiveSpec], ranges: list[tuple[float, float]]) -> list[list[float]]:
    """Each objective as a loss scaled to [0, 1] by ``ranges`` (0 best observed, 1 worst observed)."""
    def loss(value: float, up: bool, low: float, high: float) -> float:
        scaled = (value - low) / ((high - low) or 1.0)
        return 1.0 - scaled if up else scaled

    return [[loss(plotted(r, o.metric), o.higher_is_better, *rng) for o, rng in zip(objectives, ranges)] for r in records]


def hypervolume(points: list[list[float]], reference: list[float]) -> float:
    """Hypervolume dominated by minimisation ``points`` up to ``reference`` (Optuna's WFG; 2-D fallback)."""
    if not points:
        return 0.0
    try:
        import numpy as np
        from optuna._hypervolume import compute_hypervolume

        return float(compute_hypervolume(np.asarray(points, dtype=float), np.asarray(reference, dtype=float)))
    except ImportError:  # pragma: no cover - private Optuna API moved: exact 2-D sweep on the first two objectives
        total, best_y = 0.0, reference[1]
        for x, y in sorted((p[0], p[1]) for p in points):
            if y < best_y:
                total += (reference[0] - x) * (best_y - y)
                best_y = y
        return total


def history_plot(view: StudyView, path: Path) -> Path:
    """history.png: :func:`history_figure`, written atomically."""
    return save(history_figure(view), path)


def history_figure(view: StudyView) -> Any:
    """Best-so-far of the first objective against trial number, and (two or more objectives) hypervolume.

    Best-so-far follows feasible COMPLETE trials (all completed ones when none is feasible). The
    hypervolume is that of the feasible trials completed so far over ALL objectives, computed with
    Optuna's ``compute_hypervolume`` after scaling each objective to a loss in [0, 1] over the whole
    study's completed trials (0 = best observed, 1 = worst observed). The reference point sits 10% of the
    observed range beyond the worst observed value in every objective (1.1), so that trials at the worst
    value still count, and the volume is divided by the reference box (1.1^k): 1.0 would mean one trial
    that was best in every objective at once. Each trial counts at the value the tables show (re-measured
    where it was).
    """
    plt = pyplot()
    done = sorted(view.completed(), key=lambda r: r.number)
    objs = view.objectives
    two = len(objs) >= 2 and bool(done)
    fig, axes = plt.subplots(2 if two else 1, 1, figsize=(FIGSIZE[0], 6.5 if two else FIGSIZE[1]), sharex=True, squeeze=False)
    ax = axes[0][0]
    if not done or not objs:
        empty(ax, "no completed trials yet")
        ax.set_title(f"{study_title(view)}: optimisation history")
        return fig
    first = objs[0]
    metric, up = first.metric, first.higher_is_better
    feasible = [r for r in done if r.feasible is not False]
    draw_trials(ax, done, lambda r: r.number, metric, lambda r: 40.0)
    best, xs, ys = None, [], []
    for r in feasible or done:
        v = plotted(r, metric)
        best = v if best is None or (v > best if up else v < best) else best
        xs.append(r.number)
        ys.append(best)
    ax.step(xs, ys, where="post", color=FRONT, linewidth=2, zorder=4,
            label="best so far" + (" (feasible trials)" if feasible else " (all trials: none feasible)"))
    base = base_value(view.baseline.get(metric))
    if base is not None:
        ax.axhline(base, color=BASELINE, linestyle="--", linewidth=1.2, label="baseline (input model)")
    ax.set_ylabel(axis_label(metric, first.unit))
    ax.set_title(f"{study_title(view)}: {'highest' if up else 'lowest'} {pretty(metric)} so far")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    if two:
        hv_ax = axes[1][0]
        ranges = [(min(plotted(r, o.metric) for r in done), max(plotted(r, o.metric) for r in done)) for o in objs]
        ref = [1.1] * len(objs)
        box = math.prod(ref)
        hx, hy, seen = [], [], []
        for r in done:
            if r.feasible is not False:
                seen.append(r)
            hx.append(r.number)
            hy.append(hypervolume(_losses(seen, objs, ranges), ref) / box)
        hv_ax.step(hx, hy, where="post", color=FEASIBLE, linewidth=2, marker="o", markersize=4,
                   label=f"hypervolume of the feasible front ({len(objs)} objectives, normalised)")
        hv_ax.set_ylabel("hypervolume (fraction)")
        hv_ax.set_title("hypervolume of the feasible Pareto front")
        hv_ax.grid(True, alpha=0.3)
        hv_ax.legend(loc="lower right", fontsize=8)
        hv_ax.set_ylim(bottom=0)
    axes[-1][0].set_xlabel("trial number")
    axes[-1][0].xaxis.get_major_locator().set_params(integer=True)
    return fig


def importance_plot(view: StudyView, path: Path) -> Path | None:
    """fANOVA parameter importance for the first objective (horizontal bars), or None (no file).

    Needs the Optuna study, at least 4 COMPLETE trials and one searched parameter; any failure in
    Optuna's importance module is logged and the figure skipped.
    """
    done = view.completed()
    if view.study is None or not view.objectives or len(done) < 4 or not any(r.point for r in done):
        return None
    metric = view.objectives[0].metric
    try:
        import optuna

        importances = optuna.importance.get_param_importances(
            view.study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
            target=lambda t: t.values[0])
    except Exception as exc:  # the report must not fail over importance
        log.warning("parameter importance skipped: %s", str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
        return None
    if not importances:
        return None
    plt = pyplot()
    names = list(importances)[::-1]
    values = [importances[n] for n in names]
    fig, ax = plt.subplots(figsize=(FIGSIZE[0], max(2.5, min(FIGSIZE[1], 1.2 + 0.45 * len(names)))))
    bars = ax.barh(names, values, color=FEASIBLE, label=f"importance for {pretty(metric)}")
    ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], padding=3, fontsize=9)
    ax.set_xlim(0, max(1.0, max(values) * 1.15))
    ax.set_xlabel(f"importance (share of the variance of {pretty(metric)}, fANOVA)")
    ax.set_ylabel("searched parameter")
    ax.set_title(f"{study_title(view)}: parameter importance for {pretty(metric)} ({len(done)} completed trials)")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return save(fig, path)
