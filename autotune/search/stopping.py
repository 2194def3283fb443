"""When a study stops, as Optuna callbacks: this run's trial count, the grid's queue, ``max_samples``
over the whole study, goals met, the first failure (``--fail-fast``) and the time budget.

A duplicate point (a sampler proposing a point of a finite space that a trial already holds) is
pruned, replaced by an unseen point, and counted by none of these rules; nor is a trial cut short (a
Ctrl-C, a dead worker): its point is queued again, and the retry counts.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from autotune.records import read_record, record_field
from autotune.search.recovery import cut_short

__all__ = ["Duplicates", "StopRules", "StudyProgress", "counted", "finished_states"]

log = logging.getLogger("autotune")


def finished_states() -> tuple[Any, ...]:
    from optuna.trial import TrialState

    return (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def counted(trial: Any) -> bool:
    """A trial that counts against ``--n-trials`` and ``max_samples`` (a duplicate does not, nor a
    trial cut short, whose point is queued again)."""
    return record_field(trial, "duplicate_of") is None and not cut_short(trial)


def _point(params: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(sorted(params.items()))


class Duplicates:
    """Finds a trial's point among earlier trials' points; queues an unseen point of the space instead."""

    def __init__(self, points: list[dict[str, Any]], *, seed: int) -> None:
        self.points = points  # every valid point of the (finite) space
        self.seed = seed

    def _held(self, study: Any, *, exclude: int) -> dict[tuple[Any, ...], int]:
        from optuna.trial import TrialState

        held: dict[tuple[Any, ...], int] = {}
        for t in study.get_trials(deepcopy=False):
            if t.number == exclude or not counted(t):
                continue
            if t.state in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING, TrialState.PRUNED):
                held.setdefault(_point(t.params), t.number)
        return held

    def earlier(self, trial: Any, point: dict[str, Any]) -> int | None:
        """The number of an earlier trial holding ``point`` (complete, running, queued or pruned), if any."""
        return self._held(trial.study, exclude=trial.number).get(_point(point))

    def replace(self, trial: Any) -> bool:
        """Queue a point no trial holds yet (False, and the study stops, when every point is held)."""
        held = self._held(trial.study, exclude=trial.number)
        unseen = [p for p in self.points if _point(p) not in held]
        if not unseen:
            log.info("every point of the search space has a trial: stopping")
            trial.study.stop()
            return False
        choice = random.Random(self.seed * 100003 + trial.number).choice(unseen)
        trial.study.enqueue_trial(choice, skip_if_exists=False)
        return True


class StopRules:
    """One Optuna callback that applies every stopping rule of a run, and says which one stopped it."""

    def __init__(self, *, n_trials: int | None = None, max_samples: int | None = None, grid: bool = False,
                 goals: bool = False, fail_fast: bool = False, time_budget: float | None = None) -> None:
        self.n_trials = n_trials  # new counted trials of this run
        self.max_samples = max_samples  # counted finished trials of the whole study (all workers, all runs)
        self.grid = grid
        self.goals = goals
        self.fail_fast = fail_fast
        self.deadline = time.monotonic() + time_budget if time_budget else None
        self.started: int = 0
        self.reason: str | None = None

    def planned(self, study: Any) -> int | None:
        """How many counted trials this run means to start, when that is known."""
        from optuna.trial import TrialState

        sizes = []
        if self.n_trials is not None:
            sizes.append(self.n_trials)
        if self.grid:
            sizes.append(len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,))))
        if self.max_samples is not None:
            done = sum(1 for t in study.get_trials(deepcopy=False, states=finished_states()) if counted(t))
            sizes.append(max(0, self.max_samples - done))
        return min(sizes) if sizes else None

    def nothing_to_do(self, study: Any) -> str | None:
        """Why no trial should start at all (a finished grid, max_samples reached), or None."""
        from optuna.trial import TrialState

        if self.grid and not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            return "every grid point has run"
        if self.max_samples is not None:
            done = sum(1 for t in study.get_trials(deepcopy=False, states=finished_states()) if counted(t))
            if done >= self.max_samples:
                return f"the study already has {done} finished trials (max_samples {self.max_samples})"
        if self.n_trials == 0:
            return "--n-trials 0"
        return None

    def __call__(self, study: Any, trial: Any) -> None:
        from optuna.trial import TrialState

        if counted(trial):
            self.started += 1
        reason = None
        if self.n_trials is not None and self.started >= self.n_trials:
            reason = f"{self.started} new trial(s) run (--n-trials)"
        elif self.fail_fast and trial.state == TrialState.FAIL:
            reason = f"trial {trial.number} failed (--fail-fast)"
        elif self.goals and trial.state == TrialState.COMPLETE and read_record(trial).feasible:
            reason = f"trial {trial.number} meets every goal (stop_when_goals_met)"
        elif self.deadline is not None and time.monotonic() >= self.deadline:
            reason = "the time budget is spent"
        else:
            reason = self.nothing_to_do(study)
        if reason is not None:
            self.reason = reason
            log.info("stopping: %s", reason)
            study.stop()


class StudyProgress:
    """``[trial k of N, ETA ..., cache hits h/p]`` for the start of each trial of a run."""

    def __init__(self, planned: int | None, deadline: float | None) -> None:
        self.planned = planned
        self.deadline = deadline
        self.began = time.monotonic()
        self.started = 0
        self.finished = 0
        self.hits = 0
        self.passes = 0

    def trial_started(self) -> str:
        self.started += 1
        parts = [f"{self.started} of {self.planned}" if self.planned else f"{self.started}"]
        if self.finished:
            per_trial = (time.monotonic() - self.began) / self.finished
            if self.planned:
                parts.append(f"ETA {_duration(per_trial * max(0, self.planned - self.started + 1))}")
            if self.deadline is not None:
                parts.append(f"{_duration(max(0.0, self.deadline - time.monotonic()))} of the time budget left")
            parts.append(f"cache hits {self.hits}/{self.passes} passes")
        return "[" + ", ".join(parts) + "]"

    def trial_finished(self, passes: list[Any]) -> None:
        self.finished += 1
        self.passes += len(passes)
        self.hits += sum(1 for p in passes if p.cache_hit)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"
