"""Trials whose worker died: which owners this process may judge dead, where their points go in the
queue, and what they count toward."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import optuna
import pytest
from optuna.storages import fail_stale_trials
from optuna.trial import TrialState

from autotune.records import RECORD_ATTR, Owner, TrialRecord
from autotune.search.recovery import fail_dead_owners, requeue_interrupted, this_owner
from autotune.search.stopping import StopRules
from autotune.search.storage import open_storage

# The tests pop trials with study.ask(), as a worker's optimize loop does, to set their heartbeat by hand.
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")

POINTS = [{"r": r, "precision": p} for r in (2, 4) for p in ("int4", "fp32")]


def gone_pid() -> int:
    """A pid no process of this namespace has now (a child that exited and was reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def this_boot() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def study_at(tmp_path: Path) -> optuna.Study:
    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat_seconds=60)
    study = optuna.create_study(study_name="s", storage=storage)
    for point in POINTS:
        study.enqueue_trial(point)
    return study


def start_trial(study: optuna.Study, owner: Owner) -> optuna.Trial:
    """Pop the next queued point as a worker does: params suggested, heartbeat and owner recorded."""
    trial = study.ask()
    trial.suggest_categorical("r", [2, 4])
    trial.suggest_categorical("precision", ["int4", "fp32"])
    study._storage.record_heartbeat(trial._trial_id)
    record = TrialRecord(number=trial.number, owner=owner)
    trial.set_user_attr(RECORD_ATTR, record.model_dump(mode="json"))
    return trial


def state_of(study: optuna.Study, number: int) -> TrialState:
    return study.get_trials(deepcopy=False)[number].state


def test_an_owner_in_another_pid_namespace_is_not_judged_dead_while_its_heartbeat_is_fresh(tmp_path: Path) -> None:
    study = study_at(tmp_path)
    here = os.readlink("/proc/self/ns/pid")
    elsewhere = Owner(host=socket.gethostname(), boot_id=this_boot(), pid=gone_pid(), pid_namespace="pid:[1]")
    assert elsewhere.pid_namespace != here
    other = start_trial(study, elsewhere)  # same host and boot, another container's pid
    assert fail_dead_owners(study) == []
    fail_stale_trials(study)  # its heartbeat is fresh: alive, whatever this namespace's pid table says
    assert state_of(study, other.number) == TrialState.RUNNING

    # The same pid in this process's own namespace is surely gone: failed at once.
    local = start_trial(study, elsewhere.model_copy(update={"pid_namespace": here}))
    assert fail_dead_owners(study) == [local.number]
    assert state_of(study, local.number) == TrialState.FAIL
    assert state_of(study, other.number) == TrialState.RUNNING


def test_an_owner_recorded_without_its_pid_namespace_is_left_to_the_heartbeat(tmp_path: Path) -> None:
    study = study_at(tmp_path)
    old = start_trial(study, Owner(host=socket.gethostname(), boot_id=this_boot(), pid=gone_pid()))
    assert fail_dead_owners(study) == []
    assert state_of(study, old.number) == TrialState.RUNNING


def test_a_dead_workers_trial_is_redone_first_and_counts_toward_nothing(tmp_path: Path) -> None:
    study = study_at(tmp_path)
    for _ in range(2):
        study.tell(start_trial(study, this_owner()), 0.0)
    killed = start_trial(study, this_owner().model_copy(update={"pid": gone_pid()}))
    assert fail_dead_owners(study) == [killed.number]
    assert requeue_interrupted(study) == [POINTS[2]]
    rules = StopRules(max_samples=4, grid=True)
    assert rules.nothing_to_do(study) is None and rules.planned(study) == 2  # 2 finished trials count, not 3
    queued = [t.system_attrs["fixed_params"] for t in study.get_trials(states=(TrialState.WAITING,))]
    assert queued == [POINTS[2], POINTS[3]]  # the cut point first, then the rest of the grid in order
    assert requeue_interrupted(study) == []  # already queued: never twice
