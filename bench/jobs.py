"""The same grid study with ``run --jobs 1`` and ``--jobs N``: when parallel trials pay on this machine.

A grid of 2 fine-tunes (target sets q/v and q/k/v/o) x 3 precisions (int4, int8, fp32) = 6 trials with
the cheap evaluator (accuracy by label scoring, a short latency run, size), each side in a fresh, empty
cache, run as ``autotune run --config`` subprocesses (imports included), alternating which goes first.
Reports both wall times, the ratio, and the trials' owners (that both jobs ran trials).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import common

PRECISIONS = ["int4", "int8", "fp32"]


def run_side(model: str, work: Path, jobs: int) -> dict[str, Any]:
    import optuna

    cfg = common.config(model, common.fresh(work), target_modules=common.TARGET_SETS, precision=PRECISIONS,
                        search={"sampler": "grid", "seed": 0})
    config = work / "config.json"
    config.write_text(json.dumps(cfg, indent=2))
    cmd = [str(Path(sys.executable).with_name("autotune")), "run", "--config", str(config), "--jobs", str(jobs)]
    began = time.perf_counter()
    with (work / "stderr.log").open("w") as err:
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=err, check=False)
    seconds = time.perf_counter() - began
    if proc.returncode != 0:
        raise RuntimeError(f"autotune run --jobs {jobs} failed ({proc.returncode}); see {work / 'stderr.log'}")
    study = optuna.load_study(study_name="out", storage=f"sqlite:///{work / 'out' / 'study.db'}")
    records = [t.user_attrs["autotune_record"] for t in study.trials]
    return {"seconds": seconds, "trials": sum(1 for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE),
            "duplicates": sum(1 for r in records if r.get("duplicate_of") is not None),
            "fine_tunes": sum(1 for r in records for p in r["passes"] if p["name"] == "lora" and not p["cache_hit"]),
            "owners": len({r["owner"]["pid"] for r in records if r.get("owner")}),
            "trial_seconds": sum(r["seconds"] for r in records)}


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0], repeats=1, extra={"jobs": 2})
    report = common.Report("jobs", args.model, f"run --jobs 1 against --jobs {args.jobs}")
    common.prepare(args.model)
    work = common.RESULTS / f"work-jobs-{args.model}"
    runs: list[dict[str, Any]] = []
    for rep in range(args.repeats):
        order = [1, args.jobs] if rep % 2 == 0 else [args.jobs, 1]
        run: dict[str, Any] = {}
        for jobs in order:
            run[jobs] = run_side(args.model, work / f"jobs-{jobs}", jobs)
            print(f"repeat {rep}: --jobs {jobs}: {run[jobs]['seconds']:.1f} s", flush=True)
        run["ratio"] = run[args.jobs]["seconds"] / run[1]["seconds"]
        runs.append(run)
    one = common.stats([r[1]["seconds"] for r in runs])
    many = common.stats([r[args.jobs]["seconds"] for r in runs])
    ratio = common.stats([r["ratio"] for r in runs])
    report.data.update({"runs": runs, "jobs": args.jobs, "seconds_1": one, f"seconds_{args.jobs}": many, "ratio": ratio})
    report.section("Setup", (
        f"Grid: target sets {[','.join(t) for t in common.TARGET_SETS]} x precision {PRECISIONS} = 6 trials, cheap evaluator, "
        f"baseline off; each side `autotune run --jobs J` in a fresh cache, {args.repeats} repeat(s), order alternating. "
        f"Usable cores: {report.data['machine']['cpus_usable']}; with --jobs {args.jobs} each job gets cores / {args.jobs} threads."))
    last = runs[-1]
    columns = ["trials", "duplicates", "fine_tunes", "owners", "trial_seconds"]
    report.section("Result", common.table(
        ["", "wall s", "trials completed", "duplicates pruned", "fine-tunes that ran", "processes that ran trials",
         "trials' own s (summed)"],
        [["--jobs 1", one, *(last[1][c] for c in columns)],
         [f"--jobs {args.jobs}", many, *(last[args.jobs][c] for c in columns)],
         [f"ratio --jobs {args.jobs} / --jobs 1", ratio, "", "", "", "", ""]]) + (
        "\n\nA duplicate is a job that found the grid's queue empty while the other's last trial ran: its sampled "
        "point is pruned as a duplicate and the study stops (not counted against --n-trials or max_samples)."))
    report.write()


if __name__ == "__main__":
    main()
