"""What a study costs with the shared-prefix cache and without it.

A grid study of 12 trials = 4 fine-tune configurations (r {4, 8} x 2 target sets) x 3 precisions
(int4, int8, fp32), all trials sharing one fresh cache, against the same 12 points run as 12 single
runs, each with its own fresh, empty cache (nothing shared). Goal: cached <= 0.4x uncached.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import common

RANKS = [4, 8]
PRECISIONS = ["int4", "int8", "fp32"]


def points() -> list[dict[str, Any]]:
    return [{"r": r, "target_modules": t, "precision": p} for r, t, p in itertools.product(RANKS, common.TARGET_SETS, PRECISIONS)]


PHASES = ["lora", "merge", "build", "evaluation and the rest"]


def cached_study(model: str, work: Path) -> tuple[float, float, int, int, dict[str, float]]:
    """Wall seconds of the 12-trial study in one fresh cache, the trials' own seconds, fine-tunes that ran,
    completed trials, and seconds per phase summed over the trials."""
    import autotune

    cfg = common.config(model, common.fresh(work), r=RANKS, target_modules=common.TARGET_SETS, precision=PRECISIONS,
                        search={"sampler": "grid", "max_samples": 12, "seed": 0})
    began = time.perf_counter()
    result = autotune.run(common.load(cfg))
    seconds = time.perf_counter() - began
    trials = result.trials
    complete = trials[trials["state"] == "COMPLETE"]
    own = float(trials["seconds.total"].sum())
    phases = {name: float(trials[f"seconds.{name}"].sum()) for name in PHASES[:3]}
    phases[PHASES[3]] = own - sum(phases.values())
    return seconds, own, int((~complete["cache_hit.lora"].astype(bool)).sum()), len(complete), phases


def uncached_runs(model: str, work: Path) -> tuple[float, float, int, int, dict[str, float]]:
    """The same for the 12 points as single runs, each in its own fresh, empty cache (own seconds: each run's record)."""
    import autotune

    began = time.perf_counter()
    fine_tunes = done = 0
    own = 0.0
    phases = dict.fromkeys(PHASES, 0.0)
    for i, point in enumerate(points()):
        precision = point.pop("precision")
        cfg = common.config(model, common.fresh(work / f"point-{i:02d}"), precision=precision, **point)
        result = autotune.run(common.load(cfg))
        fine_tunes += int(not bool(result.trials["cache_hit.lora"].iloc[0]))
        record = result.record
        own += record.seconds
        for p in record.passes:
            phases[p.name] += p.seconds
        phases[PHASES[3]] += record.seconds - sum(p.seconds for p in record.passes)
        done += 1
        print(f"uncached point {i + 1}/12 done ({time.perf_counter() - began:.0f} s)", flush=True)
    return time.perf_counter() - began, own, fine_tunes, done, phases


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0])
    report = common.Report("study_cost", args.model, "Study cost with and without the shared-prefix cache")
    common.prepare(args.model)
    work = common.RESULTS / f"work-study_cost-{args.model}"
    runs: list[dict[str, Any]] = []
    for rep in range(args.repeats):
        # Alternate the order between repeats so neither side always runs on a warmer machine.
        order = ["cached", "uncached"] if rep % 2 == 0 else ["uncached", "cached"]
        run: dict[str, Any] = {"repeat": rep}
        for side in order:
            fn = cached_study if side == "cached" else uncached_runs
            seconds, own, fine_tunes, completed, phases = fn(args.model, work / side)
            run[side] = {"seconds": seconds, "own_seconds": own, "fine_tunes": fine_tunes, "completed": completed, "phases": phases}
            print(f"repeat {rep}: {side} {seconds:.1f} s, {fine_tunes} fine-tunes, {completed} completed", flush=True)
        run["ratio"] = run["cached"]["seconds"] / run["uncached"]["seconds"]
        runs.append(run)

    cached = common.stats([r["cached"]["seconds"] for r in runs])
    uncached = common.stats([r["uncached"]["seconds"] for r in runs])
    ratio = common.stats([r["ratio"] for r in runs])
    own = {side: common.stats([r[side]["own_seconds"] for r in runs]) for side in ("cached", "uncached")}
    report.data.update({"settings": common.SETTINGS[args.model], "points": points(), "runs": runs,
                        "cached_seconds": cached, "uncached_seconds": uncached, "ratio": ratio, "goal_ratio_max": 0.4})
    report.section("Setup", (
        f"12 trials = r {RANKS} x target sets {[','.join(t) for t in common.TARGET_SETS]} x precision {PRECISIONS}; "
        f"grid sampler; {args.repeats} repeat(s), median (min–max). MetricType: accuracy (label scoring, no perplexity), "
        "latency (1 warm-up + 3 repeats, 16 tokens), size on disk (no memory probe). "
        "**Baseline evaluation off** (`engine.evaluate_input_model: false`); early stopping off. "
        "Cached: one study, one fresh cache per repeat. Uncached: each point as its own single run with its own fresh, empty cache. "
        "'trials' own s': the study's `seconds.total` summed, or each single run's recorded seconds summed; the rest of the wall "
        "time is study overhead (storage, sampling, results files and plots) or the single runs' setup."))
    report.section("Result", common.table(
        ["", "wall s", "trials' own s", "fine-tunes that ran", "trials completed"],
        [["study, shared cache", cached, own["cached"], runs[-1]["cached"]["fine_tunes"], runs[-1]["cached"]["completed"]],
         ["12 single runs, no sharing", uncached, own["uncached"], runs[-1]["uncached"]["fine_tunes"], runs[-1]["uncached"]["completed"]],
         ["ratio cached / uncached (goal <= 0.4)", ratio, "", "", ""]]))
    # What sharing can save at best: the 8 repeated fine-tunes and merges of the uncached side.
    last = runs[-1]
    repeated = (last["uncached"]["phases"]["lora"] + last["uncached"]["phases"]["merge"]) * 8 / 12
    floor = (last["uncached"]["seconds"] - repeated) / last["uncached"]["seconds"]
    report.data["phases_last_repeat"] = {side: last[side]["phases"] for side in ("cached", "uncached")}
    report.data["best_possible_ratio"] = floor
    report.section("Where the seconds went (last repeat, summed over the 12 trials)", common.table(
        ["phase", "study, shared cache", "12 single runs"],
        [[name, last["cached"]["phases"][name], last["uncached"]["phases"][name]] for name in PHASES]) + (
        f"\n\nA cache can share fine-tunes and merges, not the 12 builds and evaluations of 12 different models. Removing "
        f"only the uncached side's 8 repeated fine-tunes and merges ({repeated:.0f} s) would give a ratio of about "
        f"**{floor:.2f}** for these settings (the study also saves the per-run setup that 12 separate runs repeat, and "
        "timings vary run to run). The goal of 0.4 needs fine-tunes that dominate a trial's cost."))
    report.write()


if __name__ == "__main__":
    main()
