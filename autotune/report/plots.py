"""The report's figures (PNG, matplotlib with the Agg backend): Pareto trade-off, history, importance.

Every figure reads the study view alone. matplotlib is imported inside the functions so that the
rest of autotune does not pay for it.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any

from autotune.fileio import atomic_write
from autotune.records import MetricValue, StudyView, TrialRecord
from autotune.selection import Selection, pareto_indices, pareto_set

log = logging.getLogger("autotune")
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


def _name(view: StudyView) -> str:
    return view.name.replace("$", r"\$")  # no mathtext from a study name


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    """Tight layout, then write the PNG atomically (temp file, then rename)."""
    plt = _pyplot()
    fig.tight_layout()
    try:
        # no URL in the PNG either
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None}))
    finally:
        plt.close(fig)
    return path


def _base(metric: MetricValue | None) -> float | None:
    return None if metric is None else metric.value


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=12, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _axes(view: StudyView) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
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


def _value(record: TrialRecord, metric: str) -> float | None:
    if metric in record.objectives:
        return record.objectives[metric]
    m = record.metrics.get(metric)
    return None if m is None else m.value


def _mark_selected(ax: Any, selection: Selection, x: float | None, y: float | None) -> None:
    if selection.record is None or x is None or y is None:
        return
    note = "" if selection.feasible else " (infeasible)"
    ax.scatter([x], [y], s=420, facecolors="none", edgecolors=SELECTED, linewidths=2.2, zorder=6,
               label=f"selected: trial {selection.record.number}{note}")
    ax.annotate(f"trial {selection.record.number}", (x, y), xytext=(14, 12), textcoords="offset points", color=SELECTED,
                fontsize=10, fontweight="bold", zorder=7, arrowprops={"arrowstyle": "-", "color": SELECTED})


def _bound_lines(ax: Any, view: StudyView, metric: str, *, horizontal: bool) -> None:
    for b in view.bounds:
        if b.metric == metric:
            line = ax.axhline if horizontal else ax.axvline
            line(b.value, color=SELECTED, linestyle=":", linewidth=1.2,
                 label=f"bound: {pretty(metric)} {'≥' if b.higher_is_better else '≤'} {b.value:.4g}")


def _ci(ax: Any, x: float, y: float, metric: MetricValue | None, color: str) -> None:
    """A vertical error bar for the metric's 95% interval, when it has one."""
    if metric and metric.ci_low is not None and metric.ci_high is not None:
        ax.errorbar([x], [y], yerr=[[max(0.0, y - metric.ci_low)], [max(0.0, metric.ci_high - y)]], fmt="none", ecolor=color,
                    alpha=0.55, capsize=3, linewidth=1, zorder=2)


# Marker shape by precision and colour by depth, when a study searches either (issue 24).
PRECISION_MARKERS = {"fp32": "o", "fp16": "D", "int8": "s", "int4": "^"}
DEPTH_COLOURS = ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf")
QUANTIZER_PRECISION = {"OnnxGptqQuantization": "int4", "OnnxHqqQuantization": "int4", "OnnxMixedPrecisionQuantization": "int4",
                       "OnnxDynamicQuantization": "int8", "OnnxStaticQuantization": "int8"}


def variant(record: TrialRecord) -> tuple[int | None, str | None]:
    """(blocks dropped, precision) of a trial, from its passes' settings (None: no such pass)."""
    depth = precision = None
    for params in record.params.values():
        if "n_drop" in params:  # DropLayers
            depth = int(params["n_drop"])
        if "precision" in params:  # ModelBuilder
            precision = str(params["precision"])
    for summary in record.passes:  # a quantizer after an fp32 build sets the precision of the model
        precision = QUANTIZER_PRECISION.get(summary.type, precision)
    return depth, precision


def _variant_styles(done: list[TrialRecord]) -> dict[int, tuple[str, str]] | None:
    """Trial number -> (colour, marker) when the trials differ in depth or precision, else None."""
    variants = {r.number: variant(r) for r in done}
    depths = sorted({d for d, _ in variants.values() if d is not None})
    precisions = {p for _, p in variants.values()}
    if len(depths) < 2 and len(precisions) < 2:
        return None
    colour = {d: DEPTH_COLOURS[i % len(DEPTH_COLOURS)] for i, d in enumerate(depths)}
    return {n: (colour.get(d, FEASIBLE) if d is not None else FEASIBLE, PRECISION_MARKERS.get(p or "", "P"))
            for n, (d, p) in variants.items()}


def _variant_legend(ax: Any, done: list[TrialRecord]) -> None:
    """Legend entries for the depth colours and precision shapes (the trials themselves carry no label)."""
    variants = [variant(r) for r in done]
    depths = sorted({d for d, _ in variants if d is not None})
    for i, d in enumerate(depths):
        ax.scatter([], [], s=60, c=DEPTH_COLOURS[i % len(DEPTH_COLOURS)], marker="o", label=f"colour: {d} blocks dropped")
    for p in sorted({p for _, p in variants if p is not None}):
        ax.scatter([], [], s=60, c="white", edgecolors="#333333", marker=PRECISION_MARKERS.get(p, "P"), label=f"shape: {p}")
    if any(r.feasible is False for r in done):
        ax.scatter([], [], s=60, c=INFEASIBLE, marker="o", label="grey: infeasible trial (misses a bound)")


def _trials(ax: Any, done: list[TrialRecord], x_of: Any, ym: str, area_of: Any) -> None:
    """Feasible trials as blue dots, infeasible ones as grey crosses, each with its CI bar on ``ym``. When the
    trials differ in depth or precision: colour by depth, shape by precision (infeasible ones grey)."""
    styled = _variant_styles(done)
    if styled is not None:
        for r in done:
            colour, marker = styled[r.number]
            colour = colour if r.feasible is not False else INFEASIBLE
            ax.scatter([x_of(r)], [r.objectives[ym]], s=[area_of(r)], c=colour, marker=marker, alpha=0.85, edgecolors="white",
                       linewidths=0.5, zorder=3)
            _ci(ax, x_of(r), r.objectives[ym], r.metrics.get(ym), colour)
        _variant_legend(ax, done)
        return
    styles = ((True, FEASIBLE, "o", "feasible trial"), (False, INFEASIBLE, "X", "infeasible trial (misses a bound)"))
    for feasible, color, marker, label in styles:
        rows = [r for r in done if (r.feasible is not False) == feasible]
        if rows:
            ax.scatter([x_of(r) for r in rows], [r.objectives[ym] for r in rows], s=[area_of(r) for r in rows], c=color, marker=marker,
                       alpha=0.85, edgecolors="white", linewidths=0.5, zorder=3, label=label)
        for r in rows:
            _ci(ax, x_of(r), r.objectives[ym], r.metrics.get(ym), color)


def _finish(ax: Any, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.06, y=0.08)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, borderaxespad=0.0, labelspacing=1.0)


def pareto_plot(view: StudyView, selection: Selection, path: Path) -> Path:
    """Accuracy (y) against latency (x) for every COMPLETE trial; one objective: value against trial number.

    Feasible trials are blue dots, infeasible ones grey crosses (when the trials differ in depth or precision:
    colour by blocks dropped, shape by precision, infeasible grey), with 95% CI bars where recorded; marker
    area follows model size when a ``*size_mb`` metric exists; the feasible Pareto set is ringed in orange
    and its two-objective front joined by a step line; the baseline is a black diamond (or a dashed line);
    the selected trial is ringed in red and labelled with its number. The legend sits beside the axes.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(FIGSIZE[0] + 2.5, FIGSIZE[1] + 0.5))
    done = view.completed()
    y_obj, x_obj = _axes(view)
    if not done or y_obj is None:
        _empty(ax, "no completed trials to plot")
        ax.set_title(f"{_name(view)}: trade-off")
        return _save(fig, path)
    ym = y_obj.metric
    base_y = view.baseline.get(ym)
    if x_obj is None:  # one objective: against trial number
        _trials(ax, done, lambda r: r.number, ym, lambda r: 60.0)
        if _base(base_y) is not None:
            ax.axhline(_base(base_y), color=BASELINE, linestyle="--", linewidth=1.2, label="baseline (input model)")
        _bound_lines(ax, view, ym, horizontal=True)
        if selection.record is not None:
            _mark_selected(ax, selection, selection.record.number, selection.record.objectives.get(ym))
        ax.xaxis.get_major_locator().set_params(integer=True)
        _finish(ax, f"{_name(view)}: {pretty(ym)} per trial", "trial number", axis_label(ym, y_obj.unit))
        return _save(fig, path)
    xm = x_obj.metric
    size = _size_metric(view)
    known = [v for v in (_value(r, size) for r in done) if v is not None] if size else []
    lo, hi = (min(known), max(known)) if known else (0.0, 0.0)

    def area(s: float | None) -> float:
        return 60.0 if s is None or hi == lo else 30.0 + 270.0 * (s - lo) / (hi - lo)

    _trials(ax, done, lambda r: r.objectives[xm], ym, lambda r: area(_value(r, size) if size else None))
    front = pareto_set(view)
    if front:
        rings = [area(_value(r, size) if size else None) + 110.0 for r in front]
        ax.scatter([r.objectives[xm] for r in front], [r.objectives[ym] for r in front], s=rings, facecolors="none",
                   edgecolors=FRONT, linewidths=1.6, zorder=4,
                   label="Pareto set" + (f" (all {len(view.objectives)} objectives)" if len(view.objectives) > 2 else ""))
        pts = [[r.objectives[xm], r.objectives[ym]] for r in front]
        flat = sorted(pts[i] for i in pareto_indices(pts, [x_obj.higher_is_better, y_obj.higher_is_better]))
        ax.step([p[0] for p in flat], [p[1] for p in flat], where="pre" if x_obj.higher_is_better else "post",
                color=FRONT, linewidth=1.8, zorder=3, label=f"Pareto front ({pretty(ym)} vs {pretty(xm)})")
    bx, by = _base(view.baseline.get(xm)), _base(base_y)
    if bx is not None and by is not None:
        ax.scatter([bx], [by], marker="D", s=90, c=BASELINE, zorder=5, label="baseline (input model)")
        _ci(ax, bx, by, base_y, BASELINE)
    elif by is not None:
        ax.axhline(by, color=BASELINE, linestyle="--", linewidth=1.2, label=f"baseline {pretty(ym)}")
    elif bx is not None:
        ax.axvline(bx, color=BASELINE, linestyle="--", linewidth=1.2, label=f"baseline {pretty(xm)}")
    _bound_lines(ax, view, ym, horizontal=True)
    _bound_lines(ax, view, xm, horizontal=False)
    if selection.record is not None:
        _mark_selected(ax, selection, selection.record.objectives.get(xm), selection.record.objectives.get(ym))
    if known and hi > lo:
        unit = next((r.metrics[size].unit for r in done if size in r.metrics), "MB") or "MB"
        for s in (lo, hi):
            ax.scatter([], [], s=area(s), c="white", edgecolors="#555555", label=f"marker area: {pretty(size)} {s:.4g} {unit}")
    _finish(ax, f"{_name(view)}: {pretty(ym)} against {pretty(xm)} ({len(done)} completed trials)",
            axis_label(xm, x_obj.unit), axis_label(ym, y_obj.unit))
    return _save(fig, path)


def _losses(records: list[TrialRecord], objectives: list[dict[str, Any]], ranges: list[tuple[float, float]]) -> list[list[float]]:
    """Each objective as a loss scaled to [0, 1] by ``ranges`` (0 best observed, 1 worst observed)."""
    def loss(value: float, up: bool, low: float, high: float) -> float:
        scaled = (value - low) / ((high - low) or 1.0)
        return 1.0 - scaled if up else scaled

    return [[loss(r.objectives[o.metric], o.higher_is_better, *rng) for o, rng in zip(objectives, ranges)] for r in records]


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
    """Best-so-far of the first objective against trial number, and (two or more objectives) hypervolume.

    Best-so-far follows feasible COMPLETE trials (all completed ones when none is feasible). The
    hypervolume is that of the feasible trials completed so far over ALL objectives, computed with
    Optuna's ``compute_hypervolume`` after scaling each objective to a loss in [0, 1] over the whole
    study's completed trials (0 = best observed, 1 = worst observed). The reference point sits 10% of the
    observed range beyond the worst observed value in every objective (1.1), so that trials at the worst
    value still count, and the volume is divided by the reference box (1.1^k): 1.0 would mean one trial
    that was best in every objective at once.
    """
    plt = _pyplot()
    done = sorted(view.completed(), key=lambda r: r.number)
    objs = view.objectives
    two = len(objs) >= 2 and bool(done)
    fig, axes = plt.subplots(2 if two else 1, 1, figsize=(FIGSIZE[0], 6.5 if two else FIGSIZE[1]), sharex=True, squeeze=False)
    ax = axes[0][0]
    if not done or not objs:
        _empty(ax, "no completed trials yet")
        ax.set_title(f"{_name(view)}: optimisation history")
        return _save(fig, path)
    first = objs[0]
    metric, up = first.metric, first.higher_is_better
    feasible = [r for r in done if r.feasible is not False]
    _trials(ax, done, lambda r: r.number, metric, lambda r: 40.0)
    best, xs, ys = None, [], []
    for r in feasible or done:
        v = r.objectives[metric]
        best = v if best is None or (v > best if up else v < best) else best
        xs.append(r.number)
        ys.append(best)
    ax.step(xs, ys, where="post", color=FRONT, linewidth=2, zorder=4,
            label="best so far" + (" (feasible trials)" if feasible else " (all trials: none feasible)"))
    base = _base(view.baseline.get(metric))
    if base is not None:
        ax.axhline(base, color=BASELINE, linestyle="--", linewidth=1.2, label="baseline (input model)")
    ax.set_ylabel(axis_label(metric, first.unit))
    ax.set_title(f"{_name(view)}: {'highest' if up else 'lowest'} {pretty(metric)} so far")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    if two:
        hv_ax = axes[1][0]
        ranges = [(min(r.objectives[o.metric] for r in done), max(r.objectives[o.metric] for r in done)) for o in objs]
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
    return _save(fig, path)


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
    plt = _pyplot()
    names = list(importances)[::-1]
    values = [importances[n] for n in names]
    fig, ax = plt.subplots(figsize=(FIGSIZE[0], max(2.5, min(FIGSIZE[1], 1.2 + 0.45 * len(names)))))
    bars = ax.barh(names, values, color=FEASIBLE, label=f"importance for {pretty(metric)}")
    ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], padding=3, fontsize=9)
    ax.set_xlim(0, max(1.0, max(values) * 1.15))
    ax.set_xlabel(f"importance (share of the variance of {pretty(metric)}, fANOVA)")
    ax.set_ylabel("searched parameter")
    ax.set_title(f"{_name(view)}: parameter importance for {pretty(metric)} ({len(done)} completed trials)")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


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
