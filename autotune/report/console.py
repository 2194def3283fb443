"""Terminal summaries (rich tables)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def print_summary(result: Any, console: Console | None = None) -> None:
    console = console or Console(width=max(140, Console().width))
    record = result.record
    if record and "view" in record:
        print_study(result, console)
        return
    if record and "passes" in record:
        table = Table(title="passes", show_lines=False)
        for col in ("pass", "type", "seconds", "cache"):
            table.add_column(col)
        for p in record["passes"]:
            table.add_row(p["name"], p["type"], f"{p['seconds']:.1f}", "hit" if p["cache_hit"] else "ran")
        console.print(table)
        metrics = record.get("metrics")
        if metrics:
            from autotune.report.tables import metrics_table

            console.print(metrics_table(metrics))
        console.print(f"model: {record['model_dir']}  (total {record['seconds']:.1f} s)")


def print_study(result: Any, console: Console | None = None) -> None:
    """The Pareto set, the selected model with the baseline beside it, and where the files are."""
    from autotune.selection import pareto_set

    console = console or Console(width=max(140, Console().width))
    view = result.record["view"]
    selection = result.record["selection"]
    states: dict[str, int] = {}
    for r in view.records:
        states[r.state] = states.get(r.state, 0) + 1
    console.print(f"study [bold]{view.name}[/]: " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items())))
    table = Table(title="Pareto set (feasible, non-dominated)")
    table.add_column("trial")
    for key in sorted({k for r in view.records for k in r.point}):
        table.add_column(key)
    objectives = [o["metric"] for o in view.objectives]
    for metric in objectives:
        table.add_column(metric)
    params = sorted({k for r in view.records for k in r.point})
    chosen = selection.record.number if selection.record else None
    for r in sorted(pareto_set(view), key=lambda r: r.number):
        mark = " *" if r.number == chosen else ""
        table.add_row(f"{r.number}{mark}", *[str(r.point.get(k, "")) for k in params],
                      *[f"{r.objectives[m]:.4g}" for m in objectives])
    if view.baseline:
        base = [f"{view.baseline[m]['value']:.4g}" if m in view.baseline else "" for m in objectives]
        table.add_row("baseline", *["" for _ in params], *base)
    console.print(table)
    console.print(f"selected: {selection.rule}")
    if result.best and result.best.get("model_dir"):
        console.print(f"best model: {result.best['model_dir']}")
    console.print(f"report: {result.report_dir}")
