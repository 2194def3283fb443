"""Workers with separate local caches and one shared artifact store (issue 17): each entry is built once
across workers, ``select`` on a machine that ran no trial exports ``best/`` from the store, and a
worker killed while holding a claim does not stall the others."""

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

from autotune.records import read_meta
from tests.conftest import generate_one
from tests.search.test_study import study_config
from tests.search.test_workers import finish, worker


def worker_config(tiny_model: Path, tone_file: Path, tmp_path: Path, name: str, store: Path, **engine: Any) -> Path:
    """Worker ``name``'s config: its own cache and results folder, the shared store, short heartbeats."""
    config = study_config(tiny_model, tone_file, tmp_path / name)
    config["passes"]["build"]["precision"] = ["int4", "int8", "fp32"]  # 2 fine-tunes x 3 precisions
    # accuracy alone keeps the test short (latency runs a fresh process per model)
    config["evaluators"]["tiny"]["metrics"] = config["evaluators"]["tiny"]["metrics"][:1]
    config["engine"].update({"artifact_store": str(store), "study_name": "shared", "heartbeat_seconds": 1, **engine})
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(config))
    return path


def wait_for(condition: Any, timeout: float = 180, what: str = "") -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def claim_files(store: Path) -> list[Path]:
    return [p for p in (store / "claims").rglob("*") if p.name.isdigit()] if (store / "claims").is_dir() else []


def study_exists(db: Path, name: str) -> bool:
    """Whether the worker has created study ``name`` in ``db``: read-only, through sqlite3 (opening an Optuna
    storage here would create its tables, racing the worker's own)."""
    import sqlite3

    if not db.is_file():
        return False
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as connection:
            return bool(connection.execute("SELECT 1 FROM studies WHERE study_name = ?", (name,)).fetchall())
    except sqlite3.OperationalError as exc:  # the worker is creating the tables (or holds the write lock)
        if "no such table" in str(exc) or "locked" in str(exc):
            return False
        raise


def grid_queued(db: Path) -> bool:
    return study_exists(db, "shared") and read_meta(optuna.load_study(study_name="shared", storage=f"sqlite:///{db}")).grid_enqueued


def running(storage: str) -> int:
    study = optuna.load_study(study_name="shared", storage=storage)
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)))


def owners(storage: str) -> set[int]:
    """The pids that have taken a trial of the study (each trial's record names its owner when it starts)."""
    study = optuna.load_study(study_name="shared", storage=storage)
    return {t.user_attrs["autotune_record"]["owner"]["pid"] for t in study.get_trials(deepcopy=False)
            if (t.user_attrs.get("autotune_record") or {}).get("owner")}


def run_study(tiny_model: Path, tone_file: Path, tmp_path: Path, n_workers: int) -> tuple[optuna.Study, list[str]]:
    """n workers on one study and one store; returns the study and the workers' output. The first worker is held
    at its first build (tests.crash_hooks) until a second one has taken a trial, so that at least two workers run
    trials however the machine's load spreads them (else the first could drain the queue while the others start)."""
    store = tmp_path / "store"
    store.mkdir(parents=True)
    db = tmp_path / "study.db"
    storage = f"sqlite:///{db}"
    # No baseline: each worker would build and score it before its first trial.
    configs = [worker_config(tiny_model, tone_file, tmp_path, f"w{i}", store, evaluate_input_model=False) for i in range(n_workers)]
    resume = tmp_path / "resume-w0"
    procs = [worker(configs[0], "--storage", storage, pause={"AUTOTUNE_TEST_PAUSE": "build", "AUTOTUNE_TEST_RESUME": str(resume)})]
    wait_for(lambda: grid_queued(db), what="the first worker to queue the grid")  # as test_workers does
    for config in configs[1:]:
        # One at a time, each once the previous one holds a trial: two SQLite workers popping the queue
        # in the same instant can both take one queued trial (SQLite has no row lock; PostgreSQL has).
        wait_for(lambda n=len(procs): running(storage) >= n or all(p.poll() is not None for p in procs), what="a trial to start")
        procs.append(worker(config, "--storage", storage))
    wait_for(lambda: owners(storage) - {procs[0].pid} or procs[0].poll() is not None, what="a second worker to take a trial")
    resume.touch()  # the first worker builds on
    outs = [finish(p) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    return optuna.load_study(study_name="shared", storage=storage), outs


def test_three_workers_share_one_store_and_select_elsewhere_exports_best(tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    study, outs = run_study(tiny_model, tone_file, tmp_path, 3)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 6 and len({tuple(sorted(t.params.items())) for t in complete}) == 6  # every point once
    records = [t.user_attrs["autotune_record"] for t in complete]
    built = [p for r in records for p in r["passes"] if not p["cache_hit"]]
    assert sum(1 for p in built if p["name"] == "lora") == 2  # each fine-tune ran once across the three workers
    assert sum(1 for p in built if p["name"] == "merge") == 2
    assert sorted(p["key"] for p in built if p["name"] == "build") == sorted({r["model_key"] for r in records})
    assert len({r["owner"]["pid"] for r in records}) >= 2  # the work was spread (the first worker held until another took a trial)
    store = tmp_path / "store"
    for record in records:  # the record names where its artifacts are: in the shared store
        assert record["artifacts"]["build"] == f"{store}/models/{record['model_key']}"
        assert (store / "models" / record["model_key"] / "manifest.json").is_file()
    assert not claim_files(store)  # every claim released

    # A fourth machine: no trial ran there, its cache is empty (and the workers' caches are gone).
    for i in range(3):
        subprocess.run(["rm", "-rf", str(tmp_path / f"w{i}" / "cache")], check=True)
    fresh = tmp_path / "fresh"
    env = {**os.environ, "AUTOTUNE_CACHE_DIR": str(fresh / "cache"), "COLUMNS": "200"}
    out = subprocess.run([sys.executable, "-m", "autotune.cli", "select", str(fresh / "out"), "--storage",
                          f"sqlite:///{tmp_path / 'study.db'}", "--study", "shared"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "rebuilding" not in out.stdout + out.stderr  # fetched from the store, not trained again
    assert generate_one(fresh / "out" / "best")  # best/ loads in onnxruntime-genai
    chosen = json.loads((fresh / "out" / "selection.json").read_text())
    assert (fresh / "cache" / "models").is_dir() and any((fresh / "cache" / "models").iterdir())
    assert chosen


def test_a_worker_killed_while_holding_a_claim_does_not_stall_the_others(tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    configs = []
    for name in ("a", "b"):
        path = worker_config(tiny_model, tone_file, tmp_path, name, store, evaluate_input_model=False)
        config = json.loads(path.read_text())
        # long enough to be killed mid-fine-tune; two grid points that share it, which the survivor must finish
        config["passes"]["lora"].update({"r": 4, "training_args": {**config["passes"]["lora"]["training_args"], "max_steps": 20}})
        config["passes"]["build"]["precision"] = ["int4", "fp32"]
        path.write_text(json.dumps(config))
        configs.append(path)
    first = worker(configs[0], "--storage", storage)
    wait_for(lambda: bool(claim_files(store)), what="worker a to claim the fine-tune")
    holder = json.loads(claim_files(store)[0].read_text())
    assert holder["pid"] == first.pid and "beat" in holder
    first.send_signal(signal.SIGKILL)  # dies holding the claim: its heartbeat stops
    first.wait()
    second = worker(configs[1], "--storage", storage)
    out = finish(second, timeout=300)
    assert second.returncode == 0, out
    assert "expired" in out  # the dead worker's claim was taken over once its heartbeat stopped
    study = optuna.load_study(study_name="shared", storage=storage)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len({tuple(sorted(t.params.items())) for t in complete}) == 2  # both points, done by the survivor
    assert {t.user_attrs["autotune_record"]["owner"]["pid"] for t in complete} == {second.pid}
    ran = [p for t in complete for p in t.user_attrs["autotune_record"]["passes"] if p["name"] == "lora" and not p["cache_hit"]]
    assert len(ran) == 1
