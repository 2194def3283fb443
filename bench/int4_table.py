"""Issue 14's table from a finished `configs/smollm2_int4.yaml` study: per quantization algorithm, accuracy
(95% Wilson interval), the paired accuracy difference to the fp32 trial (95% bootstrap interval over the
same held-out rows), decode ms/token p50, size, and the quantization pass's seconds and peak RSS.

    .venv/bin/python bench/int4_table.py [results/smollm2-int4]

Seconds come from the trial record (the pass's wall time); peak RSS from the pass's quant_stats.json
(written by the ONNX Runtime int4 passes; the builder writes none, so its rows show "-").
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def label(record: Any) -> str:
    params = record.params.get("quant", {})
    chosen = record.point.get("quant.pass", "")
    if chosen.startswith("ModelBuilder"):
        if params.get("precision") == "fp32":
            return "fp32 (builder)"
        algo = params.get("algo_config", "default")
        return f"int4 builder {'RTN' if algo in ('default', 'rtn') else algo}, block {params.get('block_size')}"
    if "Mixed" in chosen:
        return (f"int4 mixed: {params.get('algorithm')} + {params.get('budget')} of {params.get('budget_unit')} "
                f"at {params.get('high_precision')}, block {params.get('block_size')}")
    name = chosen.removeprefix("Onnx").removesuffix("Quantization").upper()
    rows = f", {params['calibration_rows']} rows" if "calibration_rows" in params else ""
    return f"int4 {name}, block {params.get('block_size')}{rows}"


def stats_of(record: Any) -> dict[str, Any]:
    folder = Path(record.artifacts.get("quant", ""))
    for candidate in (folder / "quant_stats.json", folder / "model" / "quant_stats.json"):
        if candidate.is_file():
            return json.loads(candidate.read_text())
    return {}


def paired(correct: str, reference: str, *, draws: int = 10_000) -> tuple[float, float, float]:
    """Accuracy difference (candidate - reference) on the same rows, with a 95% paired bootstrap interval."""
    a = np.frombuffer(correct.encode(), dtype=np.uint8) - ord("0")
    b = np.frombuffer(reference.encode(), dtype=np.uint8) - ord("0")
    diff = a.astype(float) - b
    rng = np.random.default_rng(0)
    means = diff[rng.integers(0, len(diff), (draws, len(diff)))].mean(axis=1)
    return float(diff.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def metric(record: Any, name: str) -> Any:
    """A trial metric by its sub-type name (stored as ``<metric>-<sub_type>``, e.g. ``accuracy-accuracy``)."""
    return next(v for k, v in record.metrics.items() if k == name or k.endswith(f"-{name}"))


def main() -> None:
    import optuna

    sys.path.insert(0, str(ROOT))
    from autotune.records import read_record

    results = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "results" / "smollm2-int4")
    storage = f"sqlite:///{results / 'study.db'}"
    name = optuna.get_all_study_summaries(storage)[0].study_name
    records = [read_record(t) for t in optuna.load_study(study_name=name, storage=storage).trials]
    records = [r for r in records if r.state == "COMPLETE" and r.metrics]
    fp32 = next((r for r in records if r.params.get("quant", {}).get("precision") == "fp32"), None)
    reference = metric(fp32, "accuracy").details.get("correct", "") if fp32 else ""
    print("| algorithm | accuracy (95% CI) | vs fp32, paired (95% CI) | decode ms/token p50 | size MB | quant s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for record in sorted(records, key=lambda r: -metric(r, "accuracy").value):
        acc = metric(record, "accuracy")
        diff = "-"
        correct = acc.details.get("correct", "")
        if reference and correct and record is not fp32 and len(correct) == len(reference):
            d, low, high = paired(correct, reference)
            diff = f"{100 * d:+.1f} ({100 * low:+.1f}..{100 * high:+.1f})"
        stats = stats_of(record)
        seconds = next((p.seconds for p in record.passes if p.name == "quant"), float("nan"))
        rss = stats.get("peak_rss_mb", "-")
        decode = f"{metric(record, 'decode_ms_per_token_p50').value:.2f}"
        again = [v for k, v in record.remeasured.items() if k.endswith("decode_ms_per_token_p50")]
        if again:  # re-measured after the study, interleaved with the other Pareto trials: less drift
            decode += f" (again: {again[0].value:.2f})"
        print(f"| {label(record)} | {acc.value:.3f} ({acc.ci_low:.3f}–{acc.ci_high:.3f}) | {diff} | "
              f"{decode} | {metric(record, 'size_mb').value:.1f} | "
              f"{seconds:.0f} | {rss} |")


if __name__ == "__main__":
    main()
