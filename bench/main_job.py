"""The main job's phase breakdown and its floor: where `autotune run --config configs/smollm2_tone.yaml` spends its time.

Runs the config through the CLI's own ``run`` function (so the behaviour is the user's) into a fresh output and
cache folder, and times each phase by wrapping functions in this process only: the input model's fetch/convert,
each pass type's run (LoRA and its training steps, merge, each ModelBuilder build, GPTQ with its
``quant_stats.json`` seconds by step), each evaluator type's ``evaluate``, the baseline, the Pareto set's latency
re-measure, test scoring, and the finish (``best/`` export, results files and plots, the summary). Times are
exclusive (a wrapped call inside another is subtracted from the outer one), so the rows add up to at most the
wall time; ``unaccounted`` is the rest (orchestration: Optuna, storage, cache keys and reads, lazy imports).
The floor is the irreducible work at this machine's speed: training steps, GPTQ's quantization math and the
accuracy evaluator's forward passes (validation and test); latency and memory measurement is reported apart.

    .venv/bin/python bench/main_job.py                        # the README's main job, fresh cache (cold)
    .venv/bin/python bench/main_job.py --warm-cache DIR       # reuse a cache: fetch/convert and fine-tunes hit it
    .venv/bin/python bench/main_job.py --config other.yaml --output-dir D --cache-dir C
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import common

BEGAN = time.perf_counter()
DEFAULT_DIR = common.ROOT / "results" / "bench-main-job"
# Exclusive seconds and call count per phase label, in order of first appearance.
PHASES: dict[str, dict[str, float]] = {}
# Open wrapped calls: [label, is_context, start, seconds spent in nested wrapped calls].
STACK: list[list[Any]] = []
# quant_stats.json's seconds by step per output folder (a ModelBuilder GPTQ build and its GPTQ pass share one).
GPTQ_STEPS: dict[str, dict[str, float]] = {}
# Each fresh latency/memory process: (structure key, model key) of the model it measured.
PROBES: list[tuple[str, str]] = []
PROBE_PROCESS_LABEL = "fresh latency process"
TRAINING_LABEL = "training steps"
GPTQ_LABEL = "GPTQ quantization"
PROBE_LABEL = "training precision probe"


def label_of(label: str, *, context: bool) -> str:
    """The row a call is counted in: the innermost context (trials outside any) and the nesting of work calls."""
    outer_context = next((f[0] for f in reversed(STACK) if f[1]), "trials")
    if context:
        return f"{label} (rest)"
    works = [f[0] for f in reversed(STACK) if not f[1]]
    inner = f"{works[0]} / {label}" if works and not STACK[-1][1] else label
    return f"{outer_context}: {inner}"


def wrap(owner: Any, attr: str, label: Any, *, context: bool = False, after: Any = None) -> None:
    """Replace ``owner.attr`` (a module function or a class's own method) by a timed call of it."""
    original = owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)

    def timed(*args: Any, **kwargs: Any) -> Any:
        name = label(*args, **kwargs) if callable(label) else label
        row = label_of(name, context=context)
        STACK.append([name, context, time.perf_counter(), 0.0])
        try:
            result = original(*args, **kwargs)
            if after is not None:
                after(*args, **kwargs)
            return result
        finally:
            _, _, start, nested = STACK.pop()
            spent = time.perf_counter() - start
            phase = PHASES.setdefault(row, {"seconds": 0.0, "count": 0})
            phase["seconds"] += spent - nested
            phase["count"] += 1
            if STACK:
                STACK[-1][3] += spent

    setattr(owner, attr, timed)


def pass_label(self: Any, model: Any, params: Any, ctx: Any, output: Path) -> str:
    name = type(self).__name__
    if name == "ModelBuilder":
        precision = getattr(params, "precision", "")
        if precision == "int4":
            return f"build int4 {'GPTQ' if params.algorithm() == 'gptq' else 'rounding'}"
        return f"build {precision}"
    return GPTQ_LABEL if name == "OnnxGptqQuantization" else name


def read_quant_stats(self: Any, model: Any, params: Any, ctx: Any, output: Path) -> None:
    path = Path(output) / "quant_stats.json"
    if path.is_file():
        GPTQ_STEPS[str(path)] = json.loads(path.read_text()).get("seconds_by_step", {})


def instrument() -> None:
    """Wrap the phases' functions (this process only)."""
    import transformers

    import autotune.evaluation  # noqa: F401  (registers the evaluators)
    import autotune.finish
    import autotune.models.fetch
    import autotune.models.gguf
    import autotune.passes  # noqa: F401  (registers the passes)
    import autotune.pipeline
    import autotune.result
    import autotune.search.final
    import autotune.search.study
    from autotune.evaluation.base import METRIC_TYPES
    from autotune.passes.base import PASS_REGISTRY

    wrap(autotune.pipeline, "resolve_input_model", "input model: fetch/convert or cache lookup", context=True)
    wrap(autotune.models.fetch, "fetch_demo", "fetch demo GGUF")
    wrap(autotune.models.gguf, "convert_gguf", "convert GGUF to safetensors")
    # Each class that defines run (a registered pass or a base it inherits run from), wrapped once.
    owners = {next(c for c in cls.__mro__ if "run" in c.__dict__) for n in PASS_REGISTRY.names() if (cls := PASS_REGISTRY.get(n))}
    for owner in owners:
        wrap(owner, "run", pass_label, after=read_quant_stats)
    try:  # the training-precision probe (fp32 against bf16 autocast), where this version has it: before autotune/training/
        import autotune.passes.precision_probe as probe
    except ImportError:
        try:
            import autotune.training.precision as probe  # type: ignore[no-redef]
        except ImportError:
            probe = None  # type: ignore[assignment]
    if probe is not None:
        wrap(probe, "choose_precision", PROBE_LABEL)
    wrap(transformers.Trainer, "train", TRAINING_LABEL)
    import autotune.evaluation.memory_probe as memory_probe

    def count_probe(model: Any, **kwargs: Any) -> None:
        try:
            from autotune.evaluation.structure import structure_key
        except ImportError:  # a version without structure keys: one row per model
            PROBES.append((f"model {model.key[:12]}", model.key))
            return
        PROBES.append((structure_key(model.path, provider=kwargs["provider"]) or f"model {model.key[:12]}", model.key))

    wrap(memory_probe, "run_probe", PROBE_PROCESS_LABEL, after=count_probe)
    for cls in {METRIC_TYPES.get(n) for n in METRIC_TYPES.names()}:
        if cls is not None and "evaluate" in cls.__dict__:
            wrap(cls, "evaluate", f"eval {cls.type_name}")
    wrap(autotune.search.study, "measure_baselines", "baseline", context=True)
    wrap(autotune.finish, "finish", "finish", context=True)
    wrap(autotune.search.final, "remeasure_latency", "re-measure", context=True)
    wrap(autotune.search.final, "evaluate_test", "test scoring", context=True)
    wrap(autotune.finish, "export_best", "export best/")
    wrap(autotune.finish, "write_results", "results files and plots")
    wrap(autotune.result.StudyResult, "print_summary", "print summary", context=True)


def category(row: str) -> str:
    """floor (irreducible work at this machine's speed), measurement (latency, memory) or overhead."""
    if PROBE_LABEL in row:
        return "overhead"
    if row.endswith(GPTQ_LABEL):
        return "floor by step, rest overhead"
    if row.endswith(TRAINING_LABEL) or row.endswith("eval accuracy"):
        return "floor"
    if row.endswith("eval latency") or row.endswith("eval footprint") or row.endswith(PROBE_PROCESS_LABEL):
        return "measurement"
    return "overhead"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=common.ROOT / "configs" / "smollm2_tone.yaml", help="the run config")
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_DIR / "out", help="emptied first")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_DIR / "cache", help="emptied first (unless --warm-cache)")
    parser.add_argument("--warm-cache", type=Path, default=None, help="reuse this cache as is (not emptied)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    import autotune.cli
    from autotune.config_checks import load_config

    users = load_config(args.config).engine
    output_dir = args.output_dir.resolve()
    cache_dir = (args.warm_cache or args.cache_dir).resolve()
    for mine, theirs in ((output_dir, users.output_dir), (cache_dir, users.cache_dir)):
        if mine == Path(theirs).resolve() and mine != (args.warm_cache.resolve() if args.warm_cache else None):
            raise SystemExit(f"error: {mine} is the config's own folder; give this benchmark its own (it empties it)")
    if args.warm_cache is not None and not cache_dir.is_dir():
        raise SystemExit(f"error: --warm-cache {cache_dir}: no such folder")
    common.fresh(output_dir)
    if args.warm_cache is None:
        common.fresh(cache_dir)

    original_load = autotune.cli._load

    def load(config: Path) -> Any:
        cfg = original_load(config)
        cfg.engine.output_dir, cfg.engine.cache_dir = output_dir, cache_dir
        return cfg

    autotune.cli._load = load
    instrument()
    PHASES["imports, config check and wrapping (this script)"] = {"seconds": time.perf_counter() - BEGAN, "count": 1}
    autotune.cli.go_offline()
    autotune.cli.setup_logging(1)
    autotune.cli.run(config=args.config, n_trials=None, timeout=None, storage=None, fail_fast=False, jobs=1)
    wall = time.perf_counter() - BEGAN
    report(args, output_dir, cache_dir, wall)


def report(args: argparse.Namespace, output_dir: Path, cache_dir: Path, wall: float) -> None:
    machine = common.header()
    rows = [{"phase": k, "seconds": v["seconds"], "share_of_wall_pct": 100 * v["seconds"] / wall, "count": int(v["count"]),
             "category": category(k)} for k, v in PHASES.items()]
    accounted = sum(r["seconds"] for r in rows)
    unaccounted = wall - accounted
    totals = {c: sum(r["seconds"] for r in rows if r["category"] == c) for c in ("floor", "measurement", "overhead")}
    gptq = {step: sum(s.get(step, 0.0) for s in GPTQ_STEPS.values()) for s in GPTQ_STEPS.values() for step in s}
    # GPTQ's quantization math (its seconds by step) is floor; the rest of the pass (graph load, save) overhead.
    gptq_rows = sum(r["seconds"] for r in rows if r["phase"].endswith(GPTQ_LABEL))
    gptq_math = min(sum(gptq.values()), gptq_rows)
    totals["floor"] += gptq_math
    totals["overhead"] += unaccounted + gptq_rows - gptq_math
    passes_ran = sorted({r["phase"].split(": ", 1)[1] for r in rows if r["phase"].startswith("trials: ") and "eval " not in r["phase"]
                         and PROBE_LABEL not in r["phase"]})
    ran = f"passes that ran: {', '.join(passes_ran)}" if passes_ran else "no pass ran: every fine-tune, merge and build was a cache hit"
    cache_note = f"warm cache {cache_dir} ({ran})" if args.warm_cache else f"fresh cache {cache_dir}"
    lines = ["", f"# Main job phase breakdown: {args.config}", "",
             common.table(["machine / setting", "value"], [[k, v] for k, v in machine.items()]), "",
             f"{cache_note}; output {output_dir}", "",
             common.table(["phase", "seconds", "share of wall %", "count", "category"],
                          [[r["phase"], round(r["seconds"], 2), round(r["share_of_wall_pct"], 1), r["count"], r["category"]] for r in rows]
                          + [["unaccounted (orchestration, lazy imports)", round(unaccounted, 2), round(100 * unaccounted / wall, 1), "",
                              "overhead"],
                             ["wall", round(wall, 2), 100.0, "", ""]])]
    if gptq:
        lines += ["", "GPTQ seconds by step (quant_stats.json, within the GPTQ rows): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in gptq.items())]
    structures: dict[str, set[str]] = {}
    for structure, model in PROBES:
        structures.setdefault(structure, set()).add(model)
    lines += ["", f"latency/memory measurements (fresh processes): {len(PROBES)}, of {sum(len(m) for m in structures.values())} "
              f"models in {len(structures)} structures",
              common.table(["structure", "processes", "models measured"],
                           [[k[:12], sum(1 for s, _ in PROBES if s == k), len(v)] for k, v in structures.items()])]
    lines += ["", common.table(["category", "seconds", "share of wall %"],
                               [[c, round(s, 2), round(100 * s / wall, 1)] for c, s in totals.items()]),
              "", "floor = training steps + GPTQ's quantization math (its seconds by step) + accuracy scoring (validation and test); "
              "measurement = latency and footprint evaluators; overhead = the rest, unaccounted included."]
    print("\n".join(lines))
    path = output_dir / "main_job_phases.json"
    path.write_text(json.dumps({"config": str(args.config), "warm_cache": str(args.warm_cache) if args.warm_cache else None,
                                "cache_dir": str(cache_dir), "machine": machine, "wall_s": wall, "phases": rows,
                                "unaccounted_s": unaccounted, "totals_s": totals, "gptq_seconds_by_step": gptq,
                                "latency_processes": [{"structure": s, "model": m} for s, m in PROBES]}, indent=2, default=str))
    print(f"\nreport: {path}")


if __name__ == "__main__":
    main()
