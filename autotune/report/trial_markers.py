"""How the trials are drawn: feasible dots and infeasible crosses, or (when a study searches depth or precision)
colour by blocks dropped and marker shape by precision (issue 24). The Pareto and history plots share it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from autotune.records import TrialRecord
from autotune.report.pass_views import pass_views
from autotune.report.plot_common import FEASIBLE, INFEASIBLE, ci_bar
from autotune.report.values import shown_metric, shown_value

__all__ = ["DEPTH_COLOURS", "PRECISION_MARKERS", "draw_trials", "plotted", "tag", "tagged", "variant"]

PRECISION_MARKERS = {"fp32": "o", "fp16": "D", "int8": "s", "int4": "^"}
DEPTH_COLOURS = ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def tag(artist: Any, role: str, records: list[TrialRecord]) -> Any:
    """Name what an artist draws ("trials:0,3"): the figure's data says which point is which trial (the tests read it)."""
    artist.set_gid(f"{role}:{','.join(str(r.number) for r in records)}")
    return artist


def tagged(ax: Any, role: str) -> dict[int, tuple[float, float]]:
    """Trial number -> plotted (x, y) of every collection :func:`tag` named ``role`` on ``ax``."""
    out: dict[int, tuple[float, float]] = {}
    for artist in ax.collections:
        name, _, numbers = (artist.get_gid() or "").partition(":")
        if name == role and numbers:
            for number, (x, y) in zip(numbers.split(","), artist.get_offsets(), strict=True):
                out[int(number)] = (float(x), float(y))
    return out


def plotted(record: TrialRecord, metric: str) -> float:
    """The plotted value of ``metric`` (the value every table shows: re-measured where it was)."""
    value = shown_value(record, metric)
    assert value is not None, f"trial {record.number} has no {metric}"
    return value


def variant(record: TrialRecord) -> tuple[int | None, str | None]:
    """(blocks dropped, precision) of a trial, as its passes' views say (None: no pass says): the last pass to name a
    precision sets it (a quantizer after an fp32 build)."""
    depth = precision = None
    for view in pass_views(record):
        depth = view.depth if view.depth is not None else depth
        precision = view.precision if view.precision is not None else precision
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


def draw_trials(ax: Any, done: list[TrialRecord], x_of: Callable[[TrialRecord], float], ym: str,
                area_of: Callable[[TrialRecord], float]) -> None:
    """Feasible trials as blue dots, infeasible ones as grey crosses, each with its CI bar on ``ym``. When the
    trials differ in depth or precision: colour by depth, shape by precision (infeasible ones grey)."""
    styled = _variant_styles(done)
    if styled is not None:
        for r in done:
            colour, marker = styled[r.number]
            colour = colour if r.feasible is not False else INFEASIBLE
            tag(ax.scatter([x_of(r)], [plotted(r, ym)], s=[area_of(r)], c=colour, marker=marker, alpha=0.85, edgecolors="white",
                           linewidths=0.5, zorder=3), "trials", [r])
            ci_bar(ax, x_of(r), plotted(r, ym), shown_metric(r, ym), colour)
        _variant_legend(ax, done)
        return
    styles = ((True, FEASIBLE, "o", "feasible trial"), (False, INFEASIBLE, "X", "infeasible trial (misses a bound)"))
    for feasible, color, marker, label in styles:
        rows = [r for r in done if (r.feasible is not False) == feasible]
        if rows:
            tag(ax.scatter([x_of(r) for r in rows], [plotted(r, ym) for r in rows], s=[area_of(r) for r in rows], c=color,
                           marker=marker, alpha=0.85, edgecolors="white", linewidths=0.5, zorder=3, label=label), "trials", rows)
        for r in rows:
            ci_bar(ax, x_of(r), plotted(r, ym), shown_metric(r, ym), color)
