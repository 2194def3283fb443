"""The results folder of a study, written from the storage alone: tables, selection, plots, HTML."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from autotune.fileio import atomic_write, write_json, write_text
from autotune.records import StudyView
from autotune.selection import Selection, pareto_set

__all__ = ["write_results"]


# Beside the results: the digest of what they were written from (see results_digest).
STAMP = ".results.sha256"
ALWAYS = ("trials.csv", "trials.parquet", "pareto.csv", "selection.json", "pareto.png", "history.png", "report.html")


def results_digest(view: StudyView, selection: Selection) -> str:
    """What the results folder shows: every trial record, the study meta, the selection, and the code that
    writes it (this package's report modules)."""
    state = {"records": [r.model_dump(mode="json") for r in view.records], "meta": view.meta.model_dump(mode="json"),
             "name": view.name, "selected": selection.record.number if selection.record else None, "rule": selection.rule,
             "policy": selection.policy, "feasible": selection.feasible, "missed_by": selection.missed_by,
             "code": [hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(__file__).parent.glob("*.py"))]}
    return hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()


def write_results(view: StudyView, selection: Selection, report_dir: Path) -> dict[str, Path]:
    """trials.csv/.parquet, pareto.csv, selection.json, plots and report.html under ``report_dir``.

    When the folder was written from the same study state and selection (its stamp says so) and every file
    is there, nothing is written or drawn (pandas and matplotlib are not even imported); a file that is
    rewritten with the same bytes keeps its mtime (:func:`autotune.fileio.atomic_write`)."""
    digest = results_digest(view, selection)
    stamp = report_dir / STAMP
    if stamp.is_file() and stamp.read_text().strip() == digest and all((report_dir / n).is_file() for n in ALWAYS):
        names = (*ALWAYS, "importance.png")
        return {n: report_dir / n for n in names if (report_dir / n).is_file()}
    files = _write_all(view, selection, report_dir)
    write_text(stamp, digest + "\n")  # after every file: a crash midway leaves no stamp vouching for old files
    return files


def _write_all(view: StudyView, selection: Selection, report_dir: Path) -> dict[str, Path]:
    from autotune.report.frames import trials_frame
    from autotune.report.html import write_report

    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / STAMP).unlink(missing_ok=True)
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
