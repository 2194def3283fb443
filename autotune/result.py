"""What ``autotune.run`` returns: the study as stored, the choice, and where the files are."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from autotune.records import StudyView, TrialRecord

__all__ = ["Reselection", "StudyResult"]


@dataclass
class StudyResult:
    """A run's outcome. A single run is a study of one point, so it has the same shape."""

    best: dict[str, Any] | None  # {"trial", "model_dir", "feasible", "rule", "metrics"} of the selected trial
    report_dir: Path
    view: StudyView
    selection: Any  # autotune.selection.Selection
    storage: str = ""  # the storage URL, password redacted
    stopped_by: str | None = None  # the rule that ended the run's trials (e.g. "trial 3 failed (--fail-fast)")

    # The tables are built when first read (pandas takes a second to import; a rerun that prints needs none).
    @cached_property
    def trials(self) -> Any:
        """pandas.DataFrame, one row per trial."""
        from autotune.report.frames import trials_frame

        return trials_frame(self.view.records)

    @cached_property
    def pareto(self) -> Any:
        """pandas.DataFrame, the feasible non-dominated trials."""
        from autotune.report.frames import trials_frame
        from autotune.selection import pareto_set

        return trials_frame(pareto_set(self.view))

    @property
    def record(self) -> TrialRecord | None:
        """The selected trial's record (for a single run: its one trial)."""
        return self.selection.record if self.selection is not None else None

    def print_summary(self) -> None:
        from autotune.report.console import print_summary

        print_summary(self)


@dataclass(frozen=True)
class Reselection:
    """What ``autotune select`` did: the choice, the exported ``best/`` (None: no trial chosen) and the results folder."""

    selection: Any  # autotune.selection.Selection
    best: Path | None
    report_dir: Path
