"""Terminal summaries (rich tables) of a run: one shape for a single run and a study."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["print_summary", "print_trials", "trials_table"]


def _title(objective: Any) -> str:
    """A readable column name ("decode p50 (ms/token)"); the stored id stays in the CSVs."""
    return objective.label or objective.metric


def _states_line(view: Any) -> str:
    states = view.states()
    return ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items()))


def print_summary(result: Any, console: Console | None = None) -> None:
    """The passes (a single run) or the Pareto set with the baseline beside it, the choice, and the files."""
    console = console or Console(width=max(140, Console().width))
    view, selection = result.view, result.selection
    if view.meta.mode == "single":
        _print_single(result, console)
        return
    from autotune.report.values import shown_value
    from autotune.selection import pareto_set

    console.print(f"study [bold]{view.name}[/]: {_states_line(view)}")
    table = Table(title="Pareto set (feasible, non-dominated)")
    table.add_column("trial")
    params = sorted({k for r in view.records for k in r.point})
    for key in params:
        table.add_column(key)
    objectives = [o.metric for o in view.objectives]
    for o in view.objectives:
        table.add_column(_title(o))
    tested = [o.metric for o in view.objectives if any(o.metric in r.test_metrics for r in view.records)]
    for metric in tested:
        table.add_column(f"{_title(next(o for o in view.objectives if o.metric == metric))} test (gap)")
    chosen = selection.record.number if selection.record else None
    for r in sorted(pareto_set(view), key=lambda r: r.number):
        mark = " *" if r.number == chosen else (" ≈" if r.number in selection.indistinguishable else "")
        values = [f"{shown_value(r, m):.4g}" for m in objectives]  # re-measured where it was, as plots and card show it
        tests = [f"{r.test_metrics[m].value:.4g} ({r.test_metrics[m].value - r.metrics[m].value:+.3f})"
                 if m in r.test_metrics and m in r.metrics else "" for m in tested]
        table.add_row(f"{r.number}{mark}", *[str(r.point.get(k, "")) for k in params], *values, *tests)
    # One baseline row per base model when the study searched the base (each trial is compared with its own).
    baselines = {f" {name}": b for name, b in view.meta.base_baselines.items()} or ({"": view.baseline} if view.baseline else {})
    for name, baseline in baselines.items():
        base = [f"{baseline[m].value:.4g}" if m in baseline else "" for m in objectives]
        table.add_row(f"baseline{name} ({view.meta.baseline_kind})", *["" for _ in params], *base, *["" for _ in tested])
    if view.meta.baseline_reference:
        ref = [f"{view.meta.baseline_reference[m].value:.4g}" if m in view.meta.baseline_reference else "" for m in objectives]
        table.add_row("input model, PyTorch (reference)", *["" for _ in params], *ref, *["" for _ in tested])
    console.print(table)
    quality = view.meta.objective("accuracy")
    console.print(f"* selected   ≈ {quality.label or quality.metric if quality else 'accuracy'} indistinguishable from the selected "
                  "trial's (paired bootstrap, validation rows)")
    console.print(f"selected: {selection.rule}")
    if result.best and result.best.get("model_dir"):
        console.print(f"best model: {result.best['model_dir']}")
    console.print(f"report: {result.report_dir}")


def _print_single(result: Any, console: Console) -> None:
    record = result.record
    if record is None:
        console.print(f"run: {_states_line(result.view)}; no model")
        return
    table = Table(title="passes", show_lines=False)
    for col in ("pass", "type", "seconds", "cache"):
        table.add_column(col)
    for p in record.passes:
        table.add_row(p.name, p.type, f"{p.seconds:.1f}", "hit" if p.cache_hit else "ran")
    console.print(table)
    if record.metrics:
        from autotune.report.tables import metrics_table

        console.print(metrics_table({
            "metrics": {k: m.model_dump(mode="json") for k, m in record.metrics.items()},
            "baseline": {k: m.model_dump(mode="json") for k, m in result.view.baseline.items()},
        }))
    console.print(f"model: {result.report_dir / 'model'}  (total {record.seconds:.1f} s)")


def trials_table(view: Any, frame: Any) -> Table:
    """The ``autotune trials`` table: each trial's state, parameters, objectives, seconds and failure or prune reason
    (``frame``: :func:`autotune.report.frames.trials_frame` of the view's records)."""
    objectives = [o.metric for o in view.objectives]
    columns = ["number", "state", "feasible", *[c for c in frame.columns if c.startswith("param.")],
               *[m for m in objectives if m in frame.columns], "seconds.total", "fail_reason", "prune_reason"]
    table = Table(title=f"study {view.name}")
    for column in columns:
        table.add_column(column.removeprefix("param."))
    for _, row in frame.iterrows():
        cells = []
        for column in columns:
            value = row.get(column)
            cells.append("" if value is None or value != value else (f"{value:.4g}" if isinstance(value, float) else str(value)))
        table.add_row(*cells)
    return table


def print_trials(view: Any, frame: Any, console: Console | None = None) -> None:
    (console or Console(width=max(160, Console().width))).print(trials_table(view, frame))
