"""Rich tables of metrics (with the baseline beside them) and of trials."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def format_metric(m: dict[str, Any]) -> str:
    value = m["value"]
    text = f"{value:.4g}"
    if m.get("ci_low") is not None:
        text += f" [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"
    return text


def metrics_table(record: dict[str, Any], title: str = "metrics") -> Table:
    metrics, baseline = record.get("metrics", {}), record.get("baseline", {})
    table = Table(title=title)
    for col in ("metric", "value (95% CI)", "unit", "n", "baseline", "change", "flag"):
        table.add_column(col)
    for name, m in metrics.items():
        base = baseline.get(name)
        change = ""
        if base is not None and base["value"]:
            delta = m["value"] - base["value"]
            change = f"{delta:+.4g} ({100 * delta / abs(base['value']):+.1f}%)"
        table.add_row(name, format_metric(m), m.get("unit", ""), str(m.get("n") or ""),
                      format_metric(base) if base else "", change, m.get("flag") or "")
    return table
