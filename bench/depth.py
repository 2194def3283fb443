"""Issue 24: what dropping decoder blocks (DropLayers, before the fine-tune) costs and buys, per precision.

One grid study over the main job's task (tones, label scoring): DropLayers ``n_drop`` in ``--depths`` x
ModelBuilder precision in ``--precisions``, each depth fine-tuned once (the cache shares a depth's
fine-tune and merge between its precisions). Every completed trial is then scored on the test split too.
Per (depth, precision): accuracy on validation and test with the paired difference to the full-depth
model of the same precision (bootstrap over the same rows, 95 %), decode ms/token p50, size on disk, the
fine-tune's seconds (train_stats.json of the LoRA entry) and the block choice (drop_layers.json).

    .venv/bin/python bench/depth.py --model smollm2 [--depths 0,6,12] [--precisions fp32,int4] [--max_steps 60]

``--int4_algo``: ``auto`` (GPTQ on the training rows, as the main job builds int4) or ``default``
(the builder's round-to-nearest: minutes faster, about 10 points less accurate on this task).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import common
from int4_table import paired


def study_config(args: Any, work: Path) -> dict[str, Any]:
    depths = [int(d) for d in args.depths.split(",")]
    precisions = args.precisions.split(",")
    config = common.config(args.model, work, precision=precisions, search={"sampler": "grid", "seed": 0})
    lora = config["passes"]["lora"]
    if args.max_steps:
        lora["training_args"]["max_steps"] = args.max_steps
        lora["training_args"]["logging_steps"] = max(1, args.max_steps // 2)
    config["passes"] = {"depth": {"type": "DropLayers", "n_drop": depths, "calibration_rows": args.calibration_rows},
                        **config["passes"]}
    build = config["passes"]["build"]
    build["algo_config"] = args.int4_algo
    if args.int4_algo in ("auto", "gptq"):
        build["calibration_rows"] = args.calibration_rows  # GPTQ's, like the block choice's: few rows, minutes saved
    build["accuracy_level"] = 4  # int8 compute for int4 on CPU (the builder's own default for RTN)
    data = config["data_configs"][0]
    data["eval_dataset_size"] = args.rows
    data["test_dataset_size"] = args.rows
    return config


def file_of(record: Any, step: str, name: str) -> dict[str, Any]:
    folder = Path(record.artifacts.get(step, ""))
    for candidate in (folder / name, folder / "model" / name):
        if candidate.is_file():
            return json.loads(candidate.read_text())
    return {}


def accuracy_cells(record: Any, reference: Any, metrics_of: Any) -> list[str]:
    acc = metric_in(metrics_of(record), "accuracy")
    if acc is None:
        return ["-", "-"]
    cell = f"{acc.value:.3f} ({acc.ci_low:.3f}–{acc.ci_high:.3f})"
    ref = metric_in(metrics_of(reference), "accuracy") if reference is not None else None
    correct, against = acc.details.get("correct", ""), (ref.details.get("correct", "") if ref else "")
    if record is reference or not correct or len(correct) != len(against):
        return [cell, "–"]
    d, low, high = paired(correct, against)
    return [cell, f"{100 * d:+.1f} ({100 * low:+.1f}..{100 * high:+.1f})"]


def metric_in(metrics: dict[str, Any], name: str) -> Any:
    return next((v for k, v in metrics.items() if k == name or k.endswith(f"-{name}")), None)


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0], extra={"depths": "", "precisions": "fp32,int4", "max_steps": 0, "rows": 0,
                                                             "calibration_rows": 32, "int4_algo": "auto"})
    args.depths = args.depths or ("0,1" if args.model == "tiny" else "0,6,12")
    args.rows = args.rows or common.SETTINGS[args.model]["eval_dataset_size"]
    common.prepare(args.model)
    import optuna

    import autotune
    from autotune.config_checks import load_config
    from autotune.records import StudyView
    from autotune.run_context import RunContext
    from autotune.search.final import evaluate_test

    work = common.fresh(common.RESULTS / f"work-depth-{args.model}")
    config = study_config(args, work)
    report = common.Report("depth", args.model, "Depth pruning x precision: accuracy, decode, size, fine-tune time")
    autotune.run(config)
    storage = f"sqlite:///{work / 'out' / 'study.db'}"
    study = optuna.load_study(study_name=optuna.get_all_study_summaries(storage)[0].study_name, storage=storage)
    view = StudyView.load(study)
    done = [r for r in view.records if r.state == "COMPLETE" and r.metrics]
    evaluate_test(view, RunContext(load_config(config)), done)  # every trial, not only the Pareto set
    view = StudyView.load(optuna.load_study(study_name=study.study_name, storage=storage))  # with the test metrics
    done = [r for r in view.records if r.state == "COMPLETE" and r.metrics]

    def key(r: Any) -> tuple[int, str]:
        return int(r.params.get("depth", {}).get("n_drop", 0)), str(r.params.get("build", {}).get("precision"))

    full = {key(r)[1]: r for r in done if key(r)[0] == 0}
    rows, raw = [], []
    for record in sorted(done, key=lambda r: (key(r)[1], key(r)[0])):
        n_drop, precision = key(record)
        reference = full.get(precision)
        train = file_of(record, "lora", "train_stats.json")
        dropped = file_of(record, "depth", "drop_layers.json")
        layers = dropped.get("num_hidden_layers")
        decode = metric_in(record.metrics, "decode_ms_per_token_p50")
        size = metric_in(record.metrics, "size_mb")
        rows.append([f"{layers - n_drop} of {layers}" if layers else str(n_drop), precision,
                     *accuracy_cells(record, reference, lambda r: r.metrics),
                     *accuracy_cells(record, reference, lambda r: r.test_metrics),
                     common.fmt(decode.value if decode else None, 2), common.fmt(size.value if size else None, 1),
                     common.fmt(train.get("seconds"), 0), ",".join(str(b) for b in dropped.get("dropped", [])) or "–"])
        raw.append({"n_drop": n_drop, "precision": precision, "metrics": {k: v.value for k, v in record.metrics.items()},
                    "test": {k: v.value for k, v in record.test_metrics.items()}, "train_stats": train, "drop_layers": dropped})
    report.data["trials"] = raw
    report.section("Per depth and precision", common.table(
        ["blocks kept", "precision", "validation accuracy (95% CI)", "vs full depth, paired", "test accuracy (95% CI)",
         "vs full depth, paired", "decode ms/token p50", "size MB", "fine-tune s", "blocks dropped"], rows))
    report.section("Settings", f"depths (n_drop) {args.depths}; precisions {args.precisions} (int4 algo_config {args.int4_algo}, "
                   f"accuracy_level 4); LoRA as bench/common.py SETTINGS[{args.model!r}]"
                   f"{f', max_steps {args.max_steps}' if args.max_steps else ''}; {args.rows} validation and {args.rows} test rows; "
                   f"DropLayers angular_run (and GPTQ) on {args.calibration_rows} training rows. "
                   "Paired: the same rows scored by this model "
                   "and the full-depth model of the same precision.")
    report.write()


if __name__ == "__main__":
    main()
