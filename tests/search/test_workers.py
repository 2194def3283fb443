"""Several workers on one study: PostgreSQL (a real server, started by .ci/run) and stale trials."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from tests.conftest import tiny_config
from tests.search.test_study import study_config

POSTGRES_URL = os.environ.get("AUTOTUNE_TEST_POSTGRES_URL")


def worker(config: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-m", "autotune.cli", "run", "--config", str(config), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


@pytest.mark.postgres
@pytest.mark.skipif(not POSTGRES_URL, reason="no PostgreSQL server: set AUTOTUNE_TEST_POSTGRES_URL (.ci/run starts one)")
def test_two_workers_on_postgres_share_a_study_without_duplicates(tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    assert POSTGRES_URL
    config = study_config(tiny_model, tone_file, tmp_path)
    config["engine"]["study_name"] = f"workers-{os.getpid()}-{int(time.time())}"
    path = tmp_path / "study.json"
    path.write_text(json.dumps(config))
    first = worker(path, "--storage", POSTGRES_URL)
    storage = optuna.storages.RDBStorage(POSTGRES_URL)
    deadline = time.time() + 120
    while time.time() < deadline:  # start the second worker once the first has queued the grid
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        if config["engine"]["study_name"] in names and optuna.load_study(
                study_name=config["engine"]["study_name"], storage=storage).user_attrs.get("grid_enqueued"):
            break
        time.sleep(0.5)
    second = worker(path, "--storage", POSTGRES_URL)
    outs = [p.communicate(timeout=600)[0] for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outs
    study = optuna.load_study(study_name=config["engine"]["study_name"], storage=storage)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 4
    assert len({tuple(sorted(t.params.items())) for t in complete}) == 4
    assert "autotune-ci-secret" not in "".join(outs)  # the password never reaches the logs
    assert "autotune-ci-secret" not in (tmp_path / "out" / "trials.csv").read_text()


def test_a_killed_worker_leaves_a_stale_trial_that_is_failed_and_retried(tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    config = tiny_config(tiny_model, tone_file, tmp_path)
    config["passes"]["lora"]["training_args"]["max_steps"] = 400  # long enough to be killed mid-fine-tune
    config["passes"]["build"]["precision"] = ["int4"]
    config["evaluators"] = {"acc": {"metrics": [{"name": "acc", "type": "accuracy", "sub_types": [{"name": "accuracy"}],
                                                 "user_config": {"perplexity": False}}]}}
    config["engine"].update({"evaluator": "acc", "evaluate_input_model": False, "heartbeat_seconds": 1,
                             "search_strategy": {"sampler": "grid"}})
    path = tmp_path / "study.json"
    path.write_text(json.dumps(config))
    storage = f"sqlite:///{tmp_path / 'out' / 'study.db'}"
    proc = worker(path)
    deadline = time.time() + 120
    while time.time() < deadline:
        if (tmp_path / "out" / "study.db").exists():
            trials = optuna.load_study(study_name="out", storage=storage).trials if _has_study(storage) else []
            if trials and trials[0].state == optuna.trial.TrialState.RUNNING and list((tmp_path / "cache" / "tmp").glob("work-*")):
                break
        time.sleep(0.5)
    time.sleep(2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(4)  # past the grace period (3 heartbeats)
    config["passes"]["lora"]["training_args"]["max_steps"] = 400
    rerun = worker(path)
    out = rerun.communicate(timeout=600)[0]
    assert rerun.returncode == 0, out
    study = optuna.load_study(study_name="out", storage=storage)
    states = [t.state for t in study.trials]
    assert states[0] == optuna.trial.TrialState.FAIL  # the killed trial, detected as stale
    assert optuna.trial.TrialState.COMPLETE in states[1:]  # retried and finished
    assert not any(p.name.endswith(".tmp") or "." in p.name for p in (tmp_path / "cache" / "models").iterdir())


def _has_study(storage: str) -> bool:
    try:
        return bool(optuna.get_all_study_summaries(storage))
    except Exception:
        return False
