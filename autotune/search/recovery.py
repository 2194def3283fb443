"""Trials cut short: a Ctrl-C, a crash, or a worker killed on this host. Their points are queued again,
ahead of the points already waiting, so that a resumed study redoes them first; a dead local worker's
trial is failed at once. A trial cut short counts toward no stopping rule (``max_samples``,
``--n-trials``): its retry does."""

from __future__ import annotations

import logging
from typing import Any

from autotune.records import RECORD_ATTR, read_record
from autotune.search.trial import INTERRUPTED

__all__ = ["cut_short", "fail_dead_owners", "requeue_interrupted"]

log = logging.getLogger("autotune")
WORKER_DIED = "the worker died"


def cut_short(trial: Any) -> bool:
    """A failed trial that did not fail on its own: interrupted (Ctrl-C), its worker died (``kill -9``,
    a reboot) or went silent (stale heartbeat) before its record was final. Its point is run again."""
    from optuna.trial import TrialState

    if trial.state != TrialState.FAIL:
        return False
    record = trial.user_attrs.get(RECORD_ATTR) or {}
    reason = record.get("fail_reason")
    if reason is None or reason == INTERRUPTED:
        return record.get("state") in ("RUNNING", "FAIL")  # RUNNING: failed by the heartbeat, not by itself
    return str(reason).startswith(WORKER_DIED)


def _point(params: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(sorted(params.items()))


def requeue_interrupted(study: Any) -> list[dict[str, Any]]:
    """Queue again, first in the queue, the points of trials cut short, unless the point already has a
    live, queued or finished trial: a resumed study redoes them before anything else."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    settled = {_point(t.params) for t in trials
               if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.WAITING, TrialState.RUNNING)}
    # A point queued by enqueue_trial has no params until it runs: its point is its fixed params.
    settled |= {_point(t.system_attrs.get("fixed_params") or {}) for t in trials if t.state == TrialState.WAITING}
    queued = []
    for trial in trials:
        point = _point(trial.params)
        if trial.params and cut_short(trial) and point not in settled:
            settled.add(point)
            queued.append(dict(trial.params))
    if queued:
        _queue_first(study, queued)
        log.info("queued again %d point(s) of trial(s) cut short earlier", len(queued))
    return queued


def _queue_first(study: Any, points: list[dict[str, Any]]) -> None:
    """Queue ``points`` ahead of the points already waiting (Optuna pops the oldest waiting trial first).

    The waiting trials this process claims (set RUNNING, as a worker's pop does, so no other worker
    takes one meanwhile) are given the new points, the points they held move back one place each, and
    the last ones go to new queued trials; then the claimed trials wait again. A queued retry of a
    stale trial (its point is its params, not fixed params) is left where it is.
    """
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage = study._storage
    claimed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        if trial.params or "fixed_params" not in trial.system_attrs:
            continue
        try:
            if storage.set_trial_state_values(trial._trial_id, state=TrialState.RUNNING):
                claimed.append(trial)
        except UpdateFinishedTrialError:  # another worker ran it meanwhile
            continue
    order = [*points, *(dict(t.system_attrs["fixed_params"]) for t in claimed)]
    try:
        for trial, point in zip(claimed, order):
            storage.set_trial_system_attr(trial._trial_id, "fixed_params", point)
    finally:
        for trial in claimed:
            storage.set_trial_state_values(trial._trial_id, state=TrialState.WAITING)
    for point in order[len(claimed):]:
        study.enqueue_trial(point, skip_if_exists=False)


def fail_dead_owners(study: Any) -> list[int]:
    """Fail at once the RUNNING trials whose owner ran on this host and is gone (a ``kill -9``, a
    reboot); the heartbeat would take its grace period to notice. Their points are queued again."""
    from optuna.trial import TrialState

    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        record = read_record(trial)
        if record.owner is None or not record.owner.is_dead_here():
            continue
        record.state = "FAIL"
        record.fail_reason = f"{WORKER_DIED} during this trial (pid {record.owner.pid} on {record.owner.host}): queued again"
        storage = study._storage  # the trial is another process's: only the storage API can finish it
        storage.set_trial_user_attr(trial._trial_id, RECORD_ATTR, record.model_dump(mode="json"))
        if storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
            failed.append(trial.number)
    if failed:
        log.info("trial(s) %s: their worker on this host is gone; failed and queued again", failed)
    return failed
