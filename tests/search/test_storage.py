"""The study storage: processes on one host popping one SQLite queue never take the same trial."""

from __future__ import annotations

import collections
import subprocess
import sys
import time
from pathlib import Path

import optuna

from autotune.search.storage import open_storage

POPPER = """
import sys, time, optuna
from autotune.search.storage import open_storage
url, out, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
optuna.logging.set_verbosity(optuna.logging.ERROR)
study = optuna.load_study(study_name="queue", storage=open_storage(url))
while time.time() < start:  # every process pops at the same instant
    time.sleep(0.001)
def objective(trial):
    with open(out, "a") as f:
        f.write(f"{trial.number}\\n")
    return 0.0
study.optimize(objective, n_trials=10)  # 4 x 10: exactly the queue
"""


def test_processes_popping_one_sqlite_queue_run_each_trial_once(tmp_path: Path) -> None:
    # Without BEGIN IMMEDIATE, Optuna's pop (read WAITING, then write RUNNING) interleaves across
    # processes: here two of four processes ran trial 0 and one then crashed ("Cannot tell a COMPLETE trial").
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="queue", storage=open_storage(url))
    for i in range(40):
        study.enqueue_trial({"x": i})
    out = tmp_path / "ran.txt"
    start = time.time() + 8  # after every process has imported optuna
    procs = [subprocess.Popen([sys.executable, "-c", POPPER, url, str(out), str(start)], stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    runs = collections.Counter(out.read_text().split())
    assert {n: c for n, c in runs.items() if c > 1} == {}  # no trial ran twice
    assert len(runs) == 40  # and the queue was emptied
