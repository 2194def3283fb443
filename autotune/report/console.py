"""Terminal summaries (rich tables)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def print_summary(result: Any, console: Console | None = None) -> None:
    console = console or Console(width=max(140, Console().width))
    record = result.record
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
