"""Trials cut short: a Ctrl-C, a crash, or a worker killed on this host. Their points are queued again
so that a resumed study redoes them, and a dead local worker's trial is failed at once."""

from __future__ import annotations

import logging
from typing import Any

from autotune.records import RECORD_ATTR, read_record
from autotune.search.trial import INTERRUPTED

__all__ = ["fail_dead_owners", "requeue_interrupted"]

log = logging.getLogger("autotune")


def requeue_interrupted(study: Any) -> list[dict[str, Any]]:
    """Queue again the points of trials a Ctrl-C (or a crash before their record was final) cut
    short, unless the point already has a live or finished trial: a resumed study redoes them."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    settled = {tuple(sorted(t.params.items())) for t in trials
               if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.WAITING, TrialState.RUNNING)}
    queued = []
    for trial in trials:
        if trial.state != TrialState.FAIL or not trial.params:
            continue
        record = trial.user_attrs.get(RECORD_ATTR) or {}
        cut_short = record.get("fail_reason") in (None, INTERRUPTED) and record.get("state") in ("RUNNING", "FAIL")
        cut_short = cut_short or bool(record.get("fail_reason", "").startswith("the worker died"))
        point = tuple(sorted(trial.params.items()))
        if cut_short and point not in settled:
            study.enqueue_trial(dict(trial.params), skip_if_exists=False)
            settled.add(point)
            queued.append(dict(trial.params))
    if queued:
        log.info("queued again %d point(s) of trial(s) cut short earlier", len(queued))
    return queued


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
        record.fail_reason = f"the worker died during this trial (pid {record.owner.pid} on {record.owner.host}): queued again"
        storage = study._storage  # the trial is another process's: only the storage API can finish it
        storage.set_trial_user_attr(trial._trial_id, RECORD_ATTR, record.model_dump(mode="json"))
        if storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
            failed.append(trial.number)
    if failed:
        log.info("trial(s) %s: their worker on this host is gone; failed and queued again", failed)
    return failed
