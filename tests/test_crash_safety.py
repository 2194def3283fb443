"""kill -9 in the middle of a fine-tune, a build and a cache write: rerunning the same command
resumes with every completed trial kept, the killed trial failed (stale heartbeat) and retried,
and no half-written cache entry ever used."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest

from autotune.cache import Cache
from tests.search.test_study import study_config

ROOT = Path(__file__).resolve().parents[1]


def start(config: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    # Output goes to a file, not a pipe: a pipe nobody reads while the test waits fills up and
    # blocks the child on a write (seen in CI: the Ctrl-C run never exited).
    with log.open("w") as sink:
        return subprocess.Popen([sys.executable, "-m", "tests.crash_hooks", "run", "--config", str(config)], cwd=ROOT,
                                stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "200", **env})


def drill(config: dict[str, Any], root: Path, *, point: str, at: int, sig: int = signal.SIGKILL) -> subprocess.Popen:
    """Write ``config``, run it in a real subprocess until the crash hooks pause it at the ``at``-th ``point``
    (tests/crash_hooks.py), send ``sig`` there (kill -9, or Ctrl-C) and wait for the process to end."""
    path = root / "config.json"
    path.write_text(json.dumps(config))
    marker, log = root / "marker", root / "first.log"
    proc = start(path, {"AUTOTUNE_TEST_PAUSE": point, "AUTOTUNE_TEST_PAUSE_AT": str(at), "AUTOTUNE_TEST_MARKER": str(marker)}, log)
    deadline = time.time() + 240
    while not marker.exists():
        assert proc.poll() is None and time.time() < deadline, log.read_text()
        time.sleep(0.2)
    proc.send_signal(sig)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)  # faulthandler: every thread's stack into the log
        time.sleep(2)
        proc.kill()
        pytest.fail(f"the process did not exit after signal {sig}; its output and stacks:\n{log.read_text()[-6000:]}")
    return proc


def rerun(root: Path) -> tuple[str, list[optuna.trial.FrozenTrial]]:
    """The same command again, to its end: (its output, the study's trials)."""
    log = root / "rerun.log"
    proc = start(root / "config.json", {}, log)
    proc.wait(timeout=300)
    output = log.read_text()
    assert proc.returncode == 0, output
    return output, optuna.load_study(study_name="out", storage=f"sqlite:///{root / 'out' / 'study.db'}").trials


def cheap(config: dict[str, Any]) -> dict[str, Any]:
    """Two optimizer steps (the fine-tune pause is at the second), few evaluation rows, no baseline evaluation:
    the drills test what a kill leaves behind, not the model."""
    config["passes"]["lora"]["training_args"]["max_steps"] = 2
    config["data_configs"][0]["eval_dataset_size"] = 8
    config["engine"]["evaluate_input_model"] = False
    return config


@pytest.mark.parametrize(("point", "sig"), [("fine-tune", signal.SIGKILL), ("build", signal.SIGKILL),
                                           ("cache-write", signal.SIGKILL), ("fine-tune", signal.SIGINT)])
def test_kill_then_rerun_resumes_with_nothing_lost(point: str, sig: int, tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    config = cheap(study_config(tiny_model, tone_file, tmp_path))
    config["passes"]["lora"]["r"] = [2, 4, 8]
    # The builder's own int4 (GPTQ would build fp32 in a work folder first, then write the entry).
    config["passes"]["build"].update(precision="int4", algo_config="default")
    config["engine"]["heartbeat_seconds"] = 1
    # Trials 0 and 1 complete; the third fine-tune/build of the run is where the process dies (kill -9, or Ctrl-C).
    drill(config, tmp_path, point=point, at=3, sig=sig)
    storage = f"sqlite:///{tmp_path / 'out' / 'study.db'}"
    before = {t.number: t.values for t in optuna.load_study(study_name="out", storage=storage).trials
              if t.state == optuna.trial.TrialState.COMPLETE}
    assert len(before) == 2
    staging = [p for p in (tmp_path / "cache" / "tmp").iterdir() if not p.name.startswith("work-")]
    if point == "cache-write" and sig == signal.SIGKILL:
        assert staging and any((p / "model" / "model.onnx").is_file() for p in staging)  # written, not renamed
    time.sleep(4)  # past the heartbeat grace period (3 x 1 s)

    _, after = rerun(tmp_path)
    for number, values in before.items():
        assert after[number].state == optuna.trial.TrialState.COMPLETE and after[number].values == values
    killed = after[2]
    assert killed.state == optuna.trial.TrialState.FAIL
    retried = [t for t in after[3:] if t.params == killed.params]
    assert retried and retried[0].state == optuna.trial.TrialState.COMPLETE
    cache = Cache(tmp_path / "cache")
    for entry in cache.models.iterdir():
        assert cache.get(entry.name) is not None  # every entry matches its manifest
    assert not [p for p in cache.tmp.iterdir() if not p.name.startswith("work-")]  # the half entry was swept


def test_kill_9_then_the_same_command_at_once_retries_the_killed_trial(tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    """No wait for the heartbeat: the rerun sees that the owner (this host, same boot) is gone."""
    config = cheap(study_config(tiny_model, tone_file, tmp_path))
    config["passes"]["lora"]["r"] = [2, 4]
    config["passes"]["build"]["precision"] = "int4"
    config["engine"]["heartbeat_seconds"] = 60  # a stale-heartbeat retry would take 180 s: not what this tests
    proc = drill(config, tmp_path, point="fine-tune", at=1)
    output, trials = rerun(tmp_path)
    killed = trials[0]
    assert killed.state == optuna.trial.TrialState.FAIL
    assert "the worker died" in killed.user_attrs["autotune_record"]["fail_reason"]
    assert str(proc.pid) in killed.user_attrs["autotune_record"]["fail_reason"]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(t.params["lora.r"] for t in complete) == [2, 4]  # the killed point done in this very run
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    assert "running" not in output.split("study out:")[-1].lower()  # the summary calls no dead trial running


def test_kill_9_under_max_samples_then_the_same_command_runs_every_grid_point(tmp_path: Path, tiny_model: Path,
                                                                                  tone_file: Path) -> None:
    """A trial failed because its worker died counts toward nothing: the rerun redoes its point first
    and still runs the rest of the grid within ``max_samples``."""
    config = cheap(study_config(tiny_model, tone_file, tmp_path, max_samples=4))  # a grid of 4 points
    config["engine"]["heartbeat_seconds"] = 60
    # Each trial builds once: the third build is the third trial's.
    drill(config, tmp_path, point="build", at=3)
    output, trials = rerun(tmp_path)
    State = optuna.trial.TrialState
    killed = trials[2]
    assert killed.state == State.FAIL and "the worker died" in killed.user_attrs["autotune_record"]["fail_reason"]
    complete = [t for t in trials if t.state == State.COMPLETE]
    points = [(t.params["lora.r"], t.params["build.precision"]) for t in complete]
    assert sorted(points) == [(2, "fp32"), (2, "int4"), (4, "fp32"), (4, "int4")], output
    assert not [t for t in trials if t.state in (State.WAITING, State.RUNNING)], output
    assert trials[3].params == killed.params  # the cut point is redone before the rest of the grid
