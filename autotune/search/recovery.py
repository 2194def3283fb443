"""Trials cut short: a Ctrl-C, a crash, or a worker killed on this host. Their points are queued again,
ahead of the points already waiting, so that a resumed study redoes them first; a dead local worker's
trial is failed at once. A trial cut short counts toward no stopping rule (``max_samples``,
``--n-trials``): its retry does."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any

from autotune.records import Owner, read_record, record_field, write_record_in_storage

__all__ = ["INTERRUPTED", "checkable_here", "cut_short", "fail_dead_owners", "is_dead_here", "requeue_interrupted", "this_owner"]

log = logging.getLogger("autotune")
WORKER_DIED = "the worker died"
INTERRUPTED = "interrupted (Ctrl-C): queued again for the next run"


# -- liveness of a trial's owner -----------------------------------------------------------------------------
# A pid means something only in its PID namespace: containers that share the host name and boot id can each
# have their own, so a pid is looked up only from the owner's namespace; from another one only the heartbeat
# tells (engine.heartbeat_seconds).

def this_owner() -> Owner:
    """This process, as a trial record names its owner."""
    return Owner(host=socket.gethostname(), boot_id=_boot_id(), pid=os.getpid(), pid_namespace=_pid_namespace())


def checkable_here(owner: Owner) -> bool:
    """Whether this process can tell by itself that ``owner`` is gone: same host, and either rebooted since or
    the same PID namespace (the owner's pid means the same process here)."""
    if owner.host != socket.gethostname():
        return False
    if owner.boot_id != _boot_id():
        return True
    # None here: a system without /proc, whose pids are the host's; None in the record alone: a record written
    # before namespaces were kept, which could be another container's.
    return owner.pid_namespace == _pid_namespace()


def is_dead_here(owner: Owner) -> bool:
    """True when ``owner`` ran on this host and is surely gone (rebooted since, or no such pid in its PID
    namespace, which is this process's)."""
    if not checkable_here(owner):
        return False
    if owner.boot_id != _boot_id():
        return True
    if owner.pid == os.getpid():
        return False
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return _is_zombie(owner.pid)


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def _pid_namespace() -> str | None:
    """This process's PID namespace ("pid:[inode]"), or None where /proc does not tell."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


# -- trials cut short ----------------------------------------------------------------------------------------


def cut_short(trial: Any) -> bool:
    """A failed trial that did not fail on its own: interrupted (Ctrl-C), its worker died (``kill -9``,
    a reboot) or went silent (stale heartbeat) before its record was final. Its point is run again."""
    from optuna.trial import TrialState

    if trial.state != TrialState.FAIL:
        return False
    reason = record_field(trial, "fail_reason")
    if reason is None or reason == INTERRUPTED:
        return record_field(trial, "state") in ("RUNNING", "FAIL")  # RUNNING: failed by the heartbeat, not by itself
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
        if record.owner is None or not is_dead_here(record.owner):
            continue
        record.state = "FAIL"
        record.fail_reason = f"{WORKER_DIED} during this trial (pid {record.owner.pid} on {record.owner.host}): queued again"
        storage = study._storage  # the trial is another process's: only the storage API can finish it
        write_record_in_storage(storage, trial._trial_id, record)
        if storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
            failed.append(trial.number)
    if failed:
        log.info("trial(s) %s: their worker on this host is gone; failed and queued again", failed)
    return failed
