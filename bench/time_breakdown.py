"""Where a study's time goes: fine-tune, merge, build, each evaluator, and autotune's own orchestration.

A grid study of 4 trials (2 LoRA target sets x int4/fp32) with the full evaluator (accuracy with
perplexity, latency 2 warm-up + 10 repeats, size and peak memory). Per trial: pass seconds and cache
hits from the trial records, each evaluator timed around its ``evaluate`` call, and orchestration =
the record's ``seconds.orchestration`` plus the evaluation time outside the evaluators (cache keys,
cache reads/writes). Study overhead = the whole run's wall time minus the trials' totals: before
the first trial, between trials (Optuna sampling, storage, gc), inside an Optuna trial but outside the
objective, and after the last trial (selection, ``best/`` export, results files and plots).
Goal: orchestration < 2% of trial time.
"""

from __future__ import annotations

import time
from typing import Any

import common

EVALUATOR = {"metrics": [
    {"name": "accuracy", "type": "accuracy", "sub_types": [{"name": "accuracy", "priority": 1}, {"name": "perplexity", "priority": -1}],
     "user_config": {"mode": "label_scoring"}},
    {"name": "latency", "type": "latency", "sub_types": [{"name": "decode_ms_per_token_p50", "priority": 2}],
     "user_config": {"prompt_tokens": 32, "generate_tokens": 32, "warmup": 2, "repeats": 10}},
    {"name": "footprint", "type": "footprint", "sub_types": [{"name": "size_mb", "priority": 3}, {"name": "peak_rss_mb", "priority": -1}]},
]}
METRICS = ["accuracy", "latency", "footprint"]
# (model key, evaluator type, seconds, wall-clock start): the start places a call inside its trial, so the
# Pareto set's latency re-measured after the last trial is not counted as that trial's evaluation.
TIMINGS: list[tuple[str, str, float, float]] = []


def time_evaluators() -> None:
    """Wrap each registered evaluator's ``evaluate`` (in this process only) to record its seconds."""
    import autotune.evaluation  # noqa: F401  (registers the evaluators)
    from autotune.evaluation.base import METRIC_TYPES

    for cls in {cls for _, cls in METRIC_TYPES.items()}:
        if "evaluate" in cls.__dict__:
            cls.evaluate = timed(cls.__dict__["evaluate"], cls.type_name)


def timed(original: Any, name: str) -> Any:
    def evaluate(self: Any, model: Any, params: Any, ctx: Any) -> Any:
        began, wall = time.perf_counter(), time.time()
        try:
            return original(self, model, params, ctx)
        finally:
            TIMINGS.append((model.key, name, time.perf_counter() - began, wall))

    return evaluate


def one_study(model: str, rep: int) -> dict[str, Any]:
    import autotune

    TIMINGS.clear()
    work = common.fresh(common.RESULTS / f"work-time_breakdown-{model}" / f"rep-{rep}")
    cfg = common.config(model, work, evaluator=EVALUATOR, target_modules=common.TARGET_SETS, precision=["int4", "fp32"],
                        search={"sampler": "grid", "max_samples": 4, "seed": 0})
    began = time.time()
    result = autotune.run(common.load(cfg))
    ended = time.time()
    trials = []
    frozen = {t.number: t for t in result.view.study.get_trials(deepcopy=False)}
    for row in result.trials.to_dict("records"):
        t = frozen[row["number"]]
        window = (t.datetime_start.timestamp(), t.datetime_complete.timestamp())
        metrics = dict.fromkeys(METRICS, 0.0)
        for key, name, seconds, wall in TIMINGS:
            if key == row["model_key"] and window[0] <= wall <= window[1] and name in metrics:
                metrics[name] += seconds
        glue = row["seconds.evaluation"] - sum(metrics.values())
        trials.append({
            "number": row["number"], "params": {k: v for k, v in row.items() if k.startswith("param.")},
            **{f"{p}": row[f"seconds.{p}"] for p in ("lora", "merge", "build")},
            **{f"cache_hit.{p}": row[f"cache_hit.{p}"] for p in ("lora", "merge", "build")},
            **metrics, "eval_glue": glue, "orchestration": row["seconds.orchestration"] + glue, "total": row["seconds.total"],
            "optuna_start": t.datetime_start.timestamp(), "optuna_end": t.datetime_complete.timestamp(),
        })
    trials.sort(key=lambda t: t["optuna_start"])
    wall = ended - began
    gaps = sum(b["optuna_start"] - a["optuna_end"] for a, b in zip(trials, trials[1:]))
    overhead = {
        "before_first_trial": trials[0]["optuna_start"] - began,
        "between_trials": gaps,
        "optuna_in_trial_outside_objective": sum(t["optuna_end"] - t["optuna_start"] - t["total"] for t in trials),
        "after_last_trial": ended - trials[-1]["optuna_end"],
    }
    trial_total = sum(t["total"] for t in trials)
    return {"wall": wall, "trials": trials, "trial_total": trial_total, "study_overhead": overhead,
            "orchestration_in_trials": sum(t["orchestration"] for t in trials)}


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0])
    report = common.Report("time_breakdown", args.model, "Where the time goes")
    common.prepare(args.model)
    time_evaluators()
    studies = []
    for rep in range(args.repeats):
        studies.append(one_study(args.model, rep))
        print(f"repeat {rep}: {studies[-1]['wall']:.1f} s", flush=True)

    parts = ["lora", "merge", "build", *METRICS, "orchestration"]
    last = studies[-1]
    rows = [[t["number"], ",".join(str(v) for v in t["params"].values()),
             *[f"{t[p]:.2f} ({100 * t[p] / t['total']:.1f}%)" for p in parts], f"{t['total']:.2f}"] for t in last["trials"]]
    totals = {p: common.stats([sum(t[p] for t in s["trials"]) for s in studies]) for p in parts}
    shares = {p: common.stats([100 * sum(t[p] for t in s["trials"]) / s["trial_total"] for s in studies]) for p in parts}
    overhead = {k: common.stats([s["study_overhead"][k] for s in studies]) for k in last["study_overhead"]}
    orch_share = common.stats([100 * s["orchestration_in_trials"] / s["trial_total"] for s in studies])
    all_share = common.stats([100 * (s["orchestration_in_trials"] + s["wall"] - s["trial_total"]) / s["wall"] for s in studies])
    report.data.update({"settings": common.SETTINGS[args.model], "evaluator": EVALUATOR, "studies": studies, "totals_s": totals,
                        "shares_pct": shares, "study_overhead_s": overhead, "orchestration_share_of_trials_pct": orch_share,
                        "orchestration_share_of_wall_pct": all_share, "goal_pct_max": 2.0})
    report.section("Setup", (
        f"Grid study, 4 trials = target sets {[','.join(t) for t in common.TARGET_SETS]} x precision [int4, fp32]; "
        f"{args.repeats} repeat(s) (fresh cache and storage each), median (min–max). Baseline evaluation off, early stopping off. "
        "Pass seconds include autotune's cache write (manifest hashes) of that pass; a cache hit shows 0 s. "
        "orchestration = `seconds.orchestration` + evaluation time outside the evaluators."))
    report.section("Per trial (last repeat): seconds (share of the trial)",
                   common.table(["trial", "params", *parts, "total s"], rows))
    report.section("All trials together", common.table(
        ["part", "seconds", "share of trial time %"], [[p, totals[p], shares[p]] for p in parts]))
    wall = common.stats([s["wall"] for s in studies])
    report.section("Study overhead outside trials (seconds)", common.table(
        ["where", "seconds"], [[k, v] for k, v in overhead.items()] + [["whole run wall time", wall]]))
    report.section("Orchestration", common.table(["measure", "%"], [
        ["orchestration / trial time (goal < 2%)", orch_share],
        ["(orchestration + study overhead) / whole run wall time", all_share]]))
    report.write()


if __name__ == "__main__":
    main()
