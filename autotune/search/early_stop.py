"""Early stopping of hopeless fine-tunes, for single- and multi-objective studies alike.

Optuna's pruners refuse multi-objective studies, so intermediate values are stored with the trial
(:func:`autotune.records.write_intermediate`) and this median rule compares a trial with earlier trials at the same step.
"""

from __future__ import annotations

import statistics
from typing import Any

from autotune.config.schema import EarlyStopConfig
from autotune.records import read_intermediate, write_intermediate


class TrialStopped(Exception):
    """Raised inside a fine-tune to stop a trial the rule judged hopeless."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MedianRule:
    """Stop when the loss at step s is worse than (1 + margin) x the median of earlier trials' at s."""

    def __init__(self, config: EarlyStopConfig, study: Any, trial: Any) -> None:
        self.config = config
        self.study = study
        self.trial = trial
        self.values: dict[int, float] = {}

    def peers_at(self, step: int) -> list[float]:
        from optuna.trial import TrialState

        peers = []
        for other in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
            if other.number == self.trial.number:
                continue
            value = read_intermediate(other).get(step)
            if value is not None:
                peers.append(value)
        return peers

    def decide(self, step: int, loss: float) -> str | None:
        """The reason to stop at this step, or None to go on (pure; used by :meth:`report`)."""
        if not self.config.enabled or step < self.config.warmup_steps:
            return None
        peers = self.peers_at(step)
        if len(peers) < self.config.min_trials:
            return None
        median = statistics.median(peers)
        if loss > median * (1 + self.config.margin):
            return (f"eval loss {loss:.4f} at step {step} is more than {self.config.margin:.0%} worse than the "
                    f"median {median:.4f} of {len(peers)} earlier trials")
        return None

    def report(self, step: int, loss: float) -> None:
        self.values[step] = loss
        write_intermediate(self.trial, self.values)
        reason = self.decide(step, loss)
        if reason is not None:
            raise TrialStopped(reason)
