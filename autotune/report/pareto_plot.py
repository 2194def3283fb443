"""The trade-off figure (pareto.png): accuracy against latency of every completed trial, the Pareto front,
the baseline, the bounds and the selected trial."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autotune.records import ObjectiveSpec, StudyView
from autotune.report.plot_common import (
    BASELINE,
    FIGSIZE,
    FRONT,
    SELECTED,
    axis_label,
    base_value,
    ci_bar,
    empty,
    pretty,
    pyplot,
    save,
    study_title,
)
from autotune.report.trial_markers import draw_trials, plotted, tag
from autotune.report.values import shown_value
from autotune.selection import Selection, pareto_indices, pareto_set

__all__ = ["pareto_figure", "pareto_plot"]


def _axes(view: StudyView) -> tuple[ObjectiveSpec | None, ObjectiveSpec | None]:
    """(y, x) objectives of the trade-off plot: accuracy against latency where the study has them."""
    objs = view.objectives
    y = next((o for o in objs if o.higher_is_better), objs[0] if objs else None)
    minimised = [o for o in objs if not o.higher_is_better and o is not y]
    x = next((o for o in minimised if o.kind == "latency"), minimised[0] if minimised else None)
    if x is None:
        x = next((o for o in objs if o is not y), None)
    return y, x


def _size_metric(view: StudyView) -> str | None:
    names = [o.metric for o in view.objectives] + [k for r in view.completed() for k in r.metrics]
    return next((n for n in names if n.endswith("size_mb")), None)


def _mark_selected(ax: Any, selection: Selection, x: float | None, y: float | None) -> None:
    if selection.record is None or x is None or y is None:
        return
    note = "" if selection.feasible else " (infeasible)"
    tag(ax.scatter([x], [y], s=420, facecolors="none", edgecolors=SELECTED, linewidths=2.2, zorder=6,
                   label=f"selected: trial {selection.record.number}{note}"), "selected", [selection.record])
    ax.annotate(f"trial {selection.record.number}", (x, y), xytext=(14, 12), textcoords="offset points", color=SELECTED,
                fontsize=10, fontweight="bold", zorder=7, arrowprops={"arrowstyle": "-", "color": SELECTED})


def _bound_lines(ax: Any, view: StudyView, metric: str, *, horizontal: bool) -> None:
    for b in view.bounds:
        if b.metric == metric:
            line = ax.axhline if horizontal else ax.axvline
            line(b.value, color=SELECTED, linestyle=":", linewidth=1.2,
                 label=f"bound: {pretty(metric)} {'≥' if b.higher_is_better else '≤'} {b.value:.4g}")


def _finish(ax: Any, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.06, y=0.08)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, borderaxespad=0.0, labelspacing=1.0)


def pareto_plot(view: StudyView, selection: Selection, path: Path) -> Path:
    """pareto.png: :func:`pareto_figure`, written atomically."""
    return save(pareto_figure(view, selection), path)


def pareto_figure(view: StudyView, selection: Selection) -> Any:
    """Accuracy (y) against latency (x) for every COMPLETE trial; one objective: value against trial number.

    Feasible trials are blue dots, infeasible ones grey crosses (when the trials differ in depth or precision:
    colour by blocks dropped, shape by precision, infeasible grey), with 95% CI bars where recorded; marker
    area follows model size when a ``*size_mb`` metric exists; the feasible Pareto set is ringed in orange
    and its two-objective front joined by a step line; the baseline is a black diamond (or a dashed line);
    the selected trial is ringed in red and labelled with its number. The legend sits beside the axes.
    Each trial is drawn at one value per metric, the one the tables and the card show (re-measured where it
    was, :func:`autotune.report.values.shown_value`); each collection's gid names its trials (``trials:0,2``).
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(FIGSIZE[0] + 2.5, FIGSIZE[1] + 0.5))
    done = view.completed()
    y_obj, x_obj = _axes(view)
    if not done or y_obj is None:
        empty(ax, "no completed trials to plot")
        ax.set_title(f"{study_title(view)}: trade-off")
        return fig
    ym = y_obj.metric
    base_y = view.baseline.get(ym)
    if x_obj is None:  # one objective: against trial number
        draw_trials(ax, done, lambda r: r.number, ym, lambda r: 60.0)
        if base_value(base_y) is not None:
            ax.axhline(base_value(base_y), color=BASELINE, linestyle="--", linewidth=1.2, label="baseline (input model)")
        _bound_lines(ax, view, ym, horizontal=True)
        if selection.record is not None:
            _mark_selected(ax, selection, selection.record.number, shown_value(selection.record, ym))
        ax.xaxis.get_major_locator().set_params(integer=True)
        _finish(ax, f"{study_title(view)}: {pretty(ym)} per trial", "trial number", axis_label(ym, y_obj.unit))
        return fig
    xm = x_obj.metric
    size = _size_metric(view)
    known = [v for v in (shown_value(r, size) for r in done) if v is not None] if size else []
    lo, hi = (min(known), max(known)) if known else (0.0, 0.0)

    def area(s: float | None) -> float:
        return 60.0 if s is None or hi == lo else 30.0 + 270.0 * (s - lo) / (hi - lo)

    draw_trials(ax, done, lambda r: plotted(r, xm), ym, lambda r: area(shown_value(r, size) if size else None))
    front = pareto_set(view)
    if front:
        rings = [area(shown_value(r, size) if size else None) + 110.0 for r in front]
        tag(ax.scatter([plotted(r, xm) for r in front], [plotted(r, ym) for r in front], s=rings, facecolors="none",
                       edgecolors=FRONT, linewidths=1.6, zorder=4,
                       label="Pareto set" + (f" (all {len(view.objectives)} objectives)" if len(view.objectives) > 2 else "")),
            "pareto", front)
        pts = [[plotted(r, xm), plotted(r, ym)] for r in front]
        flat = sorted(pts[i] for i in pareto_indices(pts, [x_obj.higher_is_better, y_obj.higher_is_better]))
        ax.step([p[0] for p in flat], [p[1] for p in flat], where="pre" if x_obj.higher_is_better else "post",
                color=FRONT, linewidth=1.8, zorder=3, label=f"Pareto front ({pretty(ym)} vs {pretty(xm)})")
    bx, by = base_value(view.baseline.get(xm)), base_value(base_y)
    bases = view.meta.bases
    if bx is not None and by is not None:
        ax.scatter([bx], [by], marker="D", s=90, c=BASELINE, zorder=5,
                   label=f"baseline ({bases[0].name})" if bases else "baseline (input model)")
        ci_bar(ax, bx, by, base_y, BASELINE)
        for info in bases[1:]:  # a study that searched the base model: each other base's own baseline, hollow
            own = view.meta.base_baselines.get(info.name) or {}
            x, y = base_value(own.get(xm)), base_value(own.get(ym))
            if x is not None and y is not None:
                ax.scatter([x], [y], marker="D", s=90, facecolors="none", edgecolors=BASELINE, linewidths=1.6, zorder=5,
                           label=f"baseline ({info.name})")
    elif by is not None:
        ax.axhline(by, color=BASELINE, linestyle="--", linewidth=1.2, label=f"baseline {pretty(ym)}")
    elif bx is not None:
        ax.axvline(bx, color=BASELINE, linestyle="--", linewidth=1.2, label=f"baseline {pretty(xm)}")
    _bound_lines(ax, view, ym, horizontal=True)
    _bound_lines(ax, view, xm, horizontal=False)
    if selection.record is not None:
        _mark_selected(ax, selection, shown_value(selection.record, xm), shown_value(selection.record, ym))
    if known and hi > lo:
        unit = next((r.metrics[size].unit for r in done if size in r.metrics), "MB") or "MB"
        for s in (lo, hi):
            ax.scatter([], [], s=area(s), c="white", edgecolors="#555555", label=f"marker area: {pretty(size)} {s:.4g} {unit}")
    _finish(ax, f"{study_title(view)}: {pretty(ym)} against {pretty(xm)} ({len(done)} completed trials)",
            axis_label(xm, x_obj.unit), axis_label(ym, y_obj.unit))
    return fig
