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

from autotune.records import read_meta, read_record
from tests.conftest import skip_or_fail_in_ci, tiny_config
from tests.search.test_study import study_config

POSTGRES_URL = os.environ.get("AUTOTUNE_TEST_POSTGRES_URL")


def worker(config: Path, *extra: str, pause: dict[str, str] | None = None) -> subprocess.Popen:
    """``autotune run`` in a subprocess; ``pause``: tests.crash_hooks settings that hold it at a known point."""
    # Output goes to a file beside the config, not a pipe: an unread pipe fills and blocks the worker.
    env = {**os.environ, "COLUMNS": "200", **(pause or {})}
    log = config.with_name(f"worker-{time.time_ns()}.log")
    module = "tests.crash_hooks" if pause else "autotune.cli"
    with log.open("w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", module, "run", "--config", str(config), *extra],
                                stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=Path(__file__).resolve().parents[2])
    proc.log = log  # type: ignore[attr-defined]
    return proc


def finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    proc.wait(timeout=timeout)
    return proc.log.read_text()  # type: ignore[attr-defined]


def run_workers(tmp_path: Path, tiny_model: Path, tone_file: Path, url: str, n_workers: int) -> tuple[optuna.Study, list[str]]:
    """n workers on one study (and one cache folder); the first queues the grid, the others join."""
    config = study_config(tiny_model, tone_file, tmp_path)
    config["passes"]["lora"]["r"] = [2, 4, 8]
    config["engine"]["study_name"] = f"workers-{os.getpid()}-{int(time.time())}"
    path = tmp_path / "study.json"
    path.write_text(json.dumps(config))
    first = worker(path, "--storage", url)
    storage = optuna.storages.RDBStorage(url)
    deadline = time.time() + 120
    while time.time() < deadline:  # start the second worker once the first has queued the grid
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        if config["engine"]["study_name"] in names and read_meta(optuna.load_study(
                study_name=config["engine"]["study_name"], storage=storage)).grid_enqueued:
            break
        time.sleep(0.5)
    procs = [first] + [worker(path, "--storage", url) for _ in range(n_workers - 1)]
    outs = [finish(p) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    return optuna.load_study(study_name=config["engine"]["study_name"], storage=storage), outs


def assert_shared_without_loss(study: optuna.Study, tmp_path: Path) -> None:
    from autotune.search.stopping import counted

    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 6 and all(counted(t) for t in complete)  # 3 ranks x 2 precisions, none lost
    assert len({tuple(sorted(t.params.items())) for t in complete}) == 6  # and none done twice
    # A worker that loses the race for the grid's last queued point gets a sampled trial (Optuna's ask
    # creates one once the queue is empty): it must be pruned as a duplicate before any work, uncounted.
    for extra in (t for t in study.trials if t not in complete):
        assert extra.state == optuna.trial.TrialState.PRUNED and not counted(extra), extra
        assert read_record(extra).duplicate_of is not None and not read_record(extra).metrics, extra
    from autotune.cache import Cache

    cache = Cache(tmp_path / "cache")
    assert all(cache.get(entry.name) is not None for entry in cache.models.iterdir())  # no corrupt entry


@pytest.fixture()
def postgres_url() -> str:
    if not POSTGRES_URL:
        skip_or_fail_in_ci("no PostgreSQL server: set AUTOTUNE_TEST_POSTGRES_URL (.ci/run starts one)")
    assert POSTGRES_URL
    return POSTGRES_URL


@pytest.mark.postgres
def test_three_workers_on_postgres_share_a_study_without_duplicates(postgres_url: str, tmp_path: Path,
                                                                     request: pytest.FixtureRequest) -> None:
    # The model fixtures are built only once a server is known (a session fixture would be built before postgres_url).
    tiny_model, tone_file = request.getfixturevalue("tiny_model"), request.getfixturevalue("tone_file")
    study, outs = run_workers(tmp_path, tiny_model, tone_file, postgres_url, 3)
    assert_shared_without_loss(study, tmp_path)
    password = postgres_url.split(":")[2].split("@")[0]
    assert password not in "".join(outs)  # the password never reaches the logs
    for name in ("trials.csv", "report.html", "best/model_card.json", "best/model_card.md"):
        assert password not in (tmp_path / "out" / name).read_text()


def test_two_workers_on_one_host_share_sqlite_and_the_cache(tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    (tmp_path / "out").mkdir()
    study, _ = run_workers(tmp_path, tiny_model, tone_file, f"sqlite:///{tmp_path / 'out' / 'study.db'}", 2)
    assert_shared_without_loss(study, tmp_path)


def test_a_killed_worker_leaves_a_stale_trial_that_is_failed_and_retried(tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    config = tiny_config(tiny_model, tone_file, tmp_path)
    config["passes"]["lora"]["training_args"]["max_steps"] = 4
    config["passes"]["build"]["precision"] = ["int4"]
    config["evaluators"] = {"acc": {"metrics": [{"name": "acc", "type": "accuracy", "sub_types": [{"name": "accuracy"}],
                                                 "user_config": {"perplexity": False}}]}}
    config["engine"].update({"evaluator": "acc", "evaluate_input_model": False, "heartbeat_seconds": 1,
                             "search_strategy": {"sampler": "grid"}})
    path = tmp_path / "study.json"
    path.write_text(json.dumps(config))
    storage = f"sqlite:///{tmp_path / 'out' / 'study.db'}"
    # Held at its fine-tune's second step (the same config reruns: a resumed study refuses changed settings).
    proc = worker(path, pause={"AUTOTUNE_TEST_PAUSE": "fine-tune", "AUTOTUNE_TEST_MARKER": str(tmp_path / "marker")})
    deadline = time.time() + 300  # start-up and the first steps, on a loaded 2-core machine
    while time.time() < deadline:
        if (tmp_path / "marker").exists() and (tmp_path / "out" / "study.db").exists():
            # Read-only, through sqlite3: opening an Optuna storage here would create its tables, racing the worker's own.
            states = _trial_states(tmp_path / "out" / "study.db")
            if states and states[0] == "RUNNING" and list((tmp_path / "cache" / "tmp").glob("work-*")):
                break
        time.sleep(0.5)
    time.sleep(2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(4)  # past the grace period (3 heartbeats)
    rerun = worker(path)
    out = finish(rerun)
    assert rerun.returncode == 0, out
    study = optuna.load_study(study_name="out", storage=storage)
    states = [t.state for t in study.trials]
    assert states[0] == optuna.trial.TrialState.FAIL  # the killed trial, detected as stale
    assert optuna.trial.TrialState.COMPLETE in states[1:]  # retried and finished
    assert not any(p.name.endswith(".tmp") or "." in p.name for p in (tmp_path / "cache" / "models").iterdir())


def _trial_states(db: Path) -> list[str]:
    import sqlite3

    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as connection:
            return [row[0] for row in connection.execute("SELECT state FROM trials ORDER BY number")]
    except sqlite3.Error:  # no tables yet
        return []
