"""One worker against three on one study and one shared artifact store: what the extra workers save.

A grid of 2 fine-tunes (target sets q/v and q/k/v/o) x 3 precisions (int4, int8, fp32) = 6 trials with the
cheap evaluator (accuracy by label scoring, a short latency run, size), one SQLite study, one shared
artifact store (a folder), each worker an ``autotune run --config ... --storage`` subprocess with its own
cache and results folder, as on separate machines. The first worker queues the grid; each further worker
starts once the ones before it hold a trial (two SQLite workers popping the queue in the same instant can
take one queued trial twice). Reports the wall time of each side, the ratio and the trials' owners.
Was ``tests/search/test_shared_store.py::test_measure_one_worker_against_three`` (a test that only printed).

    .venv/bin/python bench/shared_store_workers.py [--model tiny] [--repeats 1] [--workers 3]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import common

PRECISIONS = ["int4", "int8", "fp32"]
STUDY = "shared"


def worker_config(model: str, work: Path, name: str, store: Path) -> Path:
    cfg = common.config(model, work / name, target_modules=common.TARGET_SETS, precision=PRECISIONS,
                        search={"sampler": "grid", "seed": 0})
    cfg["engine"].update({"artifact_store": str(store), "study_name": STUDY, "heartbeat_seconds": 1})
    path = work / f"{name}.json"
    path.write_text(json.dumps(cfg, indent=2))
    return path


def study_trials(db: Path) -> list[Any]:
    import optuna

    return optuna.load_study(study_name=STUDY, storage=f"sqlite:///{db}").get_trials(deepcopy=False)


def study_ready(db: Path) -> bool:
    """The first worker has created the study and queued its grid (read-only through sqlite3 first: opening an
    Optuna storage before the worker has made its tables would race it)."""
    import sqlite3

    if not db.is_file():
        return False
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as connection:
            if not connection.execute("SELECT 1 FROM studies WHERE study_name = ?", (STUDY,)).fetchall():
                return False
    except sqlite3.OperationalError:
        return False
    return any(str(t.state) == "TrialState.WAITING" for t in study_trials(db))


def wait_for(condition: Any, what: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.2)


def run_side(model: str, work: Path, n_workers: int) -> dict[str, Any]:
    common.fresh(work)
    store = work / "store"
    store.mkdir()
    db = work / "study.db"
    configs = [worker_config(model, work, f"w{i}", store) for i in range(n_workers)]
    command = [str(Path(sys.executable).with_name("autotune")), "run", "--storage", f"sqlite:///{db}", "--config"]
    env = {**os.environ, "COLUMNS": "200"}
    procs, logs = [], []
    began = time.perf_counter()
    for i, config in enumerate(configs):
        if i == 1:
            wait_for(lambda: study_ready(db), "the first worker to queue the grid")
        if i >= 1:
            wait_for(lambda n=i: sum(1 for t in study_trials(db) if str(t.state) == "TrialState.RUNNING") >= n
                     or all(p.poll() is not None for p in procs), "a trial to start")
        logs.append((work / f"w{i}.log").open("w"))
        procs.append(subprocess.Popen([*command, str(config)], stdout=logs[-1], stderr=subprocess.STDOUT, env=env))
    codes = [p.wait() for p in procs]
    seconds = time.perf_counter() - began
    for log in logs:
        log.close()
    if any(codes):
        raise RuntimeError(f"a worker failed ({codes}); see {work}/w*.log")
    records = [t.user_attrs["autotune_record"] for t in study_trials(db)]
    return {"seconds": seconds, "trials": sum(1 for r in records if r.get("state") == "COMPLETE"),
            "owners": len({r["owner"]["pid"] for r in records if r.get("owner")}),
            "fine_tunes": sum(1 for r in records for p in r["passes"] if p["name"] == "lora" and not p["cache_hit"])}


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0], repeats=1, extra={"workers": 3})
    report = common.Report("shared-store-workers", args.model, f"1 worker against {args.workers} on one shared store")
    common.prepare(args.model)
    work = common.RESULTS / f"work-shared-store-{args.model}"
    runs: list[dict[Any, Any]] = []
    for rep in range(args.repeats):
        order = [1, args.workers] if rep % 2 == 0 else [args.workers, 1]
        run: dict[Any, Any] = {}
        for n in order:
            run[n] = run_side(args.model, work / f"workers-{n}", n)
            print(f"repeat {rep}: {n} worker(s): {run[n]['seconds']:.1f} s", flush=True)
        run["ratio"] = run[args.workers]["seconds"] / run[1]["seconds"]
        runs.append(run)
    report.data["runs"] = runs
    rows = [[n, common.stats([r[n]["seconds"] for r in runs]), runs[-1][n]["trials"], runs[-1][n]["owners"],
             runs[-1][n]["fine_tunes"]] for n in (1, args.workers)]
    report.section("Wall time of the 6-trial study", common.table(
        ["workers", "seconds", "trials complete", "owners", "fine-tunes run"], rows)
        + f"\n\nRatio ({args.workers} workers / 1): {common.fmt(common.stats([r['ratio'] for r in runs]))}.")
    report.write()


if __name__ == "__main__":
    main()
