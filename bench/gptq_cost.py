"""Issue 21: what GPTQ costs on SmolLM2-135M, before and after, side by side in one run.

    .venv/bin/python bench/gptq_cost.py [--baseline REV] [--rows 128] [--block 32] [--held-out 40]

Each quantizer runs in a fresh process on the same fp32 ONNX build (built once into
results/bench/gptq-cost/fp32): GPTQ as of ``--baseline`` (that commit's ``autotune/`` tree, extracted with
``git archive``), GPTQ of this tree, and two round-to-nearest roundings without calibration for scale:
``rtn-mlas``, ONNX Runtime's default MatMulNBits rounding on GPTQ's own grid (MLAS's, the mixed pass's ``rtn``:
against it GPTQ's gain is the error compensation alone), and ``rtn``, the ``OnnxBlockWiseRtnQuantization``
pass on neural-compressor's RTN grid (symmetric scale 2·max/15, coarser than MLAS's max/8: against it the
gain mixes grid and algorithm; see autotune/quant/weight_only.py). Per
quantizer: the pass's wall seconds and where they went (calibration forward passes, Hessian accumulation,
the GPTQ solves, packing; for the baseline its Hessian collection and solves are timed by wrapping its
functions), the process's peak RSS (VmHWM of the fresh process, so imports and data loading count too)
and the pass's own peak (VmHWM reset at its start), the load average around it, and next-token agreement
with the fp32 build on held-out rows of configs/data/tones.jsonl (templated prompt + answer, every
position): mean KL(fp32 || quantized) and top-1 agreement.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "results" / "bench" / "gptq-cost"
BASELINE = "3543bb3"  # the last commit before issue 21's GPTQ


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def peak_rss_mb() -> float:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def dataset(rows: int, model: str) -> Any:
    """The tones data as the benchmarks split it, through APIs that the baseline tree has too."""
    try:
        from autotune.config_checks import load_config
    except ImportError:  # the baseline tree
        from autotune.config import load_config  # type: ignore[attr-defined,no-redef]
    from autotune.data import load_data

    config = {
        "input_model": {"type": "HfModel", "model_path": model},
        "data_configs": [{
            "name": "tones", "type": "HuggingfaceContainer",
            "load_dataset_config": {"data_name": "json", "data_files": str(ROOT / "configs" / "data" / "tones.jsonl"), "split": "train"},
            "pre_process_data_config": {"text_cols": ["phrase", "tone"], "source_max_len": 128,
                                        "text_template": "### Text: {phrase}\n### The tone is:\n{tone}"},
            "eval_dataset_size": rows,
        }],
        "passes": {"build": {"type": "ModelBuilder", "precision": "fp32"}},
        "engine": {"search_strategy": False, "cache_dir": str(WORK / "cache"), "output_dir": str(WORK / "out")},
    }
    return load_data(load_config(config).data_configs[0])


def worker(args: argparse.Namespace) -> None:
    """One quantization in this (fresh) process; its numbers go to ``<out>.json``."""
    sys.path.insert(0, args.tree)
    sys.path.insert(1, str(ROOT / "bench"))
    import autotune
    from autotune.context import PassContext
    from autotune.models.handle import ModelHandle
    from autotune.passes import get_pass

    assert Path(autotune.__file__).resolve().is_relative_to(Path(args.tree).resolve()), autotune.__file__
    data = dataset(args.held_out, args.model)
    wrapped: dict[str, float] = {}
    if args.algorithm == "gptq":
        try:  # the baseline tree (and every tree before autotune/quant/); tried first: an editable install's finder
            # would hand a tree without autotune/quant/ this tree's module
            import autotune.passes.gptq as gptq
        except ImportError:
            import autotune.quant.gptq as gptq  # type: ignore[no-redef]

        for name in ("input_moments", "gptq_codes"):  # the baseline's steps (this tree times its own)
            if hasattr(gptq, name):
                original = getattr(gptq, name)

                def timed(*a: Any, _original: Any = original, _name: str = name, **k: Any) -> Any:
                    began = time.perf_counter()
                    try:
                        return _original(*a, **k)
                    finally:
                        wrapped[_name] = wrapped.get(_name, 0.0) + time.perf_counter() - began

                setattr(gptq, name, timed)
        pass_type = "OnnxGptqQuantization"
        params = {"block_size": args.block, "calibration_rows": args.rows, "is_symmetric": args.symmetric,
                  "accuracy_level": 4}
    else:  # "rtn": the pass, on neural-compressor's grid; "rtn-mlas": below, on GPTQ's grid
        pass_type, params = "OnnxBlockWiseRtnQuantization", {"block_size": args.block, "is_symmetric": args.symmetric,
                                                             "accuracy_level": 4}
    cls = get_pass(pass_type, path="bench")
    out, work = Path(args.out), Path(args.out + "-work")
    for folder in (out, work):
        subprocess.run(["rm", "-rf", str(folder)], check=True)
        folder.mkdir(parents=True)
    load = load_average()
    began = time.perf_counter()
    if args.algorithm == "rtn-mlas":
        rtn_on_the_mlas_grid(WORK / "fp32", out, block_size=args.block, symmetric=bool(args.symmetric))
    else:
        cls().run(ModelHandle(kind="onnx", path=WORK / "fp32", key=""), cls.Params(**params),
                  PassContext(provider="CPUExecutionProvider", work_dir=work, data=data), out)
    seconds = time.perf_counter() - began
    stats_file = out / "quant_stats.json"
    stats = json.loads(stats_file.read_text()) if stats_file.is_file() else {}
    steps = stats.get("seconds_by_step") or {}
    if not steps and wrapped:
        steps = {"calibration_forward+hessian_accumulation": wrapped.get("input_moments", 0.0),
                 "gptq_solve": wrapped.get("gptq_codes", 0.0)}
    result = {"seconds": seconds, "steps": steps, "process_peak_mb": peak_rss_mb(), "pass_peak_mb": stats.get("peak_rss_mb"),
              "load_before": load, "load_after": load_average()}
    Path(args.out + ".json").write_text(json.dumps(result))  # not stdout: ONNX Runtime's quantizers print progress there


def rtn_on_the_mlas_grid(fp32: Path, out: Path, *, block_size: int, symmetric: bool) -> None:
    """Round-to-nearest on GPTQ's grid (``quantize_int4(..., "rtn")``, ONNX Runtime's default MatMulNBits
    quantizer), written as the int4 passes write a folder (tied embedding, companions, ``quant_stats.json``)."""
    import onnx

    from autotune.builder.onnx_folder import copy_companions, save_with_external_data
    from autotune.quant.weight_only import PassCost, quantize_int4, quiet_quantizer, tie_embedding

    cost = PassCost()
    with quiet_quantizer():
        graph = quantize_int4(onnx.load(str(fp32 / "model.onnx")), "rtn", block_size=block_size, symmetric=symmetric,
                              accuracy_level=4, exclude=[])
    tie_embedding(graph)
    save_with_external_data(graph, out)
    copy_companions(fp32, out)
    (out / "quant_stats.json").write_text(json.dumps({"algorithm": "rtn", **cost.stats()}))


VARIANTS = {  # name -> (worker algorithm, label in the table)
    "rtn-mlas": ("rtn-mlas", "RTN on GPTQ's grid (MLAS, max/8)"),
    "rtn": ("rtn", "RTN pass (neural-compressor's grid, 2·max/15)"),
    "baseline": ("gptq", "GPTQ at --baseline"),
    "new": ("gptq", "GPTQ of this tree"),
}


def agreement(reference: list[Any], candidate: list[Any]) -> tuple[float, float]:
    import numpy as np

    ref, cand = np.concatenate(reference), np.concatenate(candidate)
    kl = float((np.exp(ref) * (ref - cand)).sum(axis=1).mean())
    return kl, float((ref.argmax(axis=1) == cand.argmax(axis=1)).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=BASELINE)
    parser.add_argument("--rows", type=int, default=128)
    parser.add_argument("--block", type=int, default=32)
    parser.add_argument("--symmetric", type=int, default=1)
    parser.add_argument("--held-out", type=int, default=40)
    parser.add_argument("--only", default=",".join(VARIANTS), help=f"comma-separated subset of {','.join(VARIANTS)}")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tree", default=str(ROOT), help=argparse.SUPPRESS)
    parser.add_argument("--algorithm", default="gptq", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    sys.path.insert(0, str(ROOT))
    sys.path.insert(1, str(ROOT / "bench"))
    import common

    from autotune.testing import held_out_logprobs

    WORK.mkdir(parents=True, exist_ok=True)
    model = str(common.smollm2_model())
    if not (WORK / "fp32" / "model.onnx").is_file():
        from autotune.passes.model_builder import ModelBuilderParams, build_onnx

        (WORK / "fp32-work").mkdir(exist_ok=True)
        build_onnx(Path(model), WORK / "fp32", ModelBuilderParams(precision="fp32"),
                   provider="CPUExecutionProvider", work_dir=WORK / "fp32-work")
    baseline_tree = WORK / f"tree-{args.baseline}"
    if not baseline_tree.is_dir():
        baseline_tree.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline, "autotune"], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(baseline_tree)], input=archive, check=True)
    trees = {"baseline": baseline_tree}
    data = dataset(args.held_out, model)
    reference = held_out_logprobs(WORK / "fp32", data, rows=args.held_out)
    rows = []
    for name in args.only.split(","):
        algorithm, tree = VARIANTS[name][0], trees.get(name, ROOT)
        out = WORK / name
        command = [sys.executable, __file__, "--worker", "--tree", str(tree), "--algorithm", algorithm, "--out", str(out),
                   "--model", model, "--rows", str(args.rows), "--block", str(args.block), "--symmetric", str(args.symmetric),
                   "--held-out", str(args.held_out)]
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
        if done.returncode:
            raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
        result = json.loads(Path(str(out) + ".json").read_text())
        kl, top1 = agreement(reference, held_out_logprobs(out, data, rows=args.held_out))
        rows.append({"variant": name, "quantizer": VARIANTS[name][1], **result, "kl": kl, "top1": top1})
        print(json.dumps(rows[-1]), flush=True)
    (WORK / "report.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    print("| quantizer | seconds | where the time goes (s) | peak RSS MB (process / pass) | load avg before→after | KL to fp32 | top-1 |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        steps = ", ".join(f"{k} {v:.1f}" for k, v in row["steps"].items()) or "-"
        print(f"| {row['quantizer']} | {row['seconds']:.1f} | {steps} | {row['process_peak_mb']:.0f} / {row['pass_peak_mb']} | "
              f"{row['load_before']:.2f}→{row['load_after']:.2f} | {row['kl']:.4f} | {row['top1']:.3f} |")


if __name__ == "__main__":
    main()
