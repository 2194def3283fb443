"""The results folder of a study, written from the storage alone: tables, selection, plots, HTML."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autotune.fileio import atomic_write, write_json
from autotune.records import StudyView
from autotune.selection import Selection, pareto_set

__all__ = ["write_results"]


def write_results(view: StudyView, selection: Selection, report_dir: Path) -> dict[str, Path]:
    """trials.csv/.parquet, pareto.csv, selection.json, plots and report.html under ``report_dir``."""
    from autotune.report.frames import trials_frame
    from autotune.report.html import write_report

    report_dir.mkdir(parents=True, exist_ok=True)
    trials = trials_frame(view.records)
    pareto = trials_frame(pareto_set(view))
    files: dict[str, Path] = {}
    writers: dict[str, Any] = {
        "trials.csv": lambda p: trials.to_csv(p, index=False),
        "trials.parquet": lambda p: trials.to_parquet(p, index=False),
        "pareto.csv": lambda p: pareto.to_csv(p, index=False),
    }
    for name, write in writers.items():
        files[name] = atomic_write(report_dir / name, write)
    files["selection.json"] = write_json(report_dir / "selection.json", {
        "policy": selection.policy, "rule": selection.rule, "feasible": selection.feasible,
        "trial": selection.record.number if selection.record else None, "missed_by": selection.missed_by,
    })
    files.update(write_report(view, selection, trials, pareto, report_dir))
    return files
