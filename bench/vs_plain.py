"""autotune running one trial against a plain script doing the same work (bench/plain_script.py).

Each side runs as a fresh subprocess (imports included), alternating which goes first; autotune runs
``autotune run --config`` on the equivalent single-run config (LoRA -> merge -> int4 ModelBuilder,
accuracy by label scoring, no perplexity, no baseline) with a fresh, empty cache every time.
Goal: wall time autotune / plain <= 1.05, and the two accuracies close.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import common

ACCURACY_ONLY = {"metrics": [{"name": "accuracy", "type": "accuracy", "sub_types": [{"name": "accuracy", "priority": 1}],
                              "user_config": {"mode": "label_scoring", "perplexity": False}}]}


def run_plain(model: str, work: Path) -> dict[str, Any]:
    s = common.SETTINGS[model]
    cmd = [sys.executable, str(Path(__file__).with_name("plain_script.py")), "--model-path", str(common.model_path(model)),
           "--data", str(common.TONES), "--work", str(work), "--targets", ",".join(s["target_modules"]), "--r", str(s["r"]),
           "--alpha", str(s["alpha"]), "--dropout", str(s["lora_dropout"]), "--lr", str(s["learning_rate"]),
           "--max-steps", str(s["max_steps"]), "--batch-size", str(s["batch_size"]), "--seed", str(s["seed"]),
           "--max-len", str(s["source_max_len"]), "--eval-size", str(s["eval_dataset_size"]), "--block-size", str(s["block_size"])]
    seconds, out = timed(cmd, work)
    result = json.loads(out.strip().splitlines()[-1])
    return {"seconds": seconds, "accuracy": result["accuracy"], "phases": result["seconds"]}


def run_autotune(model: str, work: Path) -> dict[str, Any]:
    config = work / "config.json"
    config.write_text(json.dumps(common.config(model, work, evaluator=ACCURACY_ONLY), indent=2))
    seconds, _ = timed([str(Path(sys.executable).with_name("autotune")), "run", "--config", str(config)], work)
    record = json.loads((work / "out" / "run.json").read_text())
    phases = {p["name"]: p["seconds"] for p in record["passes"]}
    phases["run_total"] = record["seconds"]
    return {"seconds": seconds, "accuracy": record["metrics"]["metrics"]["accuracy-accuracy"]["value"], "phases": phases}


def timed(cmd: list[str], work: Path) -> tuple[float, str]:
    with (work / "stderr.log").open("w") as err:
        began = time.perf_counter()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, check=False)
        seconds = time.perf_counter() - began
    (work / "stdout.log").write_text(proc.stdout)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[1]} failed ({proc.returncode}); see {work / 'stderr.log'}")
    return seconds, proc.stdout


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0], repeats=3)
    report = common.Report("vs_plain", args.model, "autotune vs a plain script")
    common.prepare(args.model)  # build or convert the model before any timing
    root = common.RESULTS / f"work-vs_plain-{args.model}"
    runs: list[dict[str, Any]] = []
    for rep in range(args.repeats):
        run: dict[str, Any] = {"repeat": rep}
        order = ["plain", "autotune"] if rep % 2 == 0 else ["autotune", "plain"]
        for side in order:
            fn = run_plain if side == "plain" else run_autotune
            run[side] = fn(args.model, common.fresh(root / f"{side}-{rep}"))
            print(f"repeat {rep}: {side} {run[side]['seconds']:.1f} s, accuracy {run[side]['accuracy']:.3f}", flush=True)
        run["ratio"] = run["autotune"]["seconds"] / run["plain"]["seconds"]
        runs.append(run)

    summary = {side: {"seconds": common.stats([r[side]["seconds"] for r in runs]),
                      "accuracy": common.stats([r[side]["accuracy"] for r in runs])} for side in ("plain", "autotune")}
    ratio = common.stats([r["ratio"] for r in runs])
    report.data.update({"settings": common.SETTINGS[args.model], "runs": runs, "summary": summary, "ratio": ratio, "goal_ratio_max": 1.05})
    report.section("Setup", (
        f"{args.repeats} repeat(s), alternating order, median (min–max). Both: a fresh Python process, LoRA with the settings "
        f"{common.SETTINGS[args.model]}, merge, int4 ONNX (block 32, symmetric), label-scoring accuracy on the same held-out rows. "
        "autotune: `autotune run --config` (single run, fresh empty cache, accuracy-only evaluator, no baseline)."))
    report.section("Result", common.table(["", "wall s (process)", "accuracy"], [
        ["plain script", summary["plain"]["seconds"], summary["plain"]["accuracy"]],
        ["autotune run", summary["autotune"]["seconds"], summary["autotune"]["accuracy"]],
        ["ratio autotune / plain (goal <= 1.05)", ratio, ""]]))
    plain, tuned = runs[-1]["plain"]["phases"], runs[-1]["autotune"]["phases"]
    passes = tuned["lora"] + tuned["merge"] + tuned["build"]
    report.section("Phases of the last repeat (seconds, as each side measures them in its process)", common.table(
        ["phase", "plain", "autotune"],
        [["fine-tune (both: incl. importing torch/transformers/peft)", plain["fine_tune"], tuned["lora"]],
         ["merge", plain["merge"], tuned["merge"]], ["build", plain["build"], tuned["build"]],
         ["evaluation (autotune: + model export and records)", plain["evaluation"], tuned["run_total"] - passes],
         ["in-process total (plain: incl. imports)", plain["total"], tuned["run_total"]],
         ["process wall time", runs[-1]["plain"]["seconds"], runs[-1]["autotune"]["seconds"]]]))
    report.write()


if __name__ == "__main__":
    main()
