"""Label scoring: today's per-row onnxruntime-genai path against the batched onnxruntime path, side by side.

Old: one row at a time through onnxruntime-genai (the prompt once, then a rewind and a pass per label).
New: ``Backend.score_labels``: several rows per prefill, every label of every row per step.
``hf`` (the baseline in PyTorch): old feeds prompt + label once per label; new prefills 16 prompts and
scores every label on their KV cache.
Both score the same held-out rows of ``configs/data/tones.jsonl`` against the same labels, on the same
ONNX folder, in this one process (warmed up first, alternating which goes first per repeat). Reports
seconds, the speed-up, how many predictions agree and the largest score difference.

The model: SmolLM2 when its converted folder is already in ``results/bench/smollm2-import`` (``--model
auto``, the default; nothing is converted here), else the tests' tiny Llama. Each precision's ONNX folder
is built once into ``results/bench/label_scoring-<model>-<precision>/``.

    .venv/bin/python bench/bench_label_scoring.py [--model auto|tiny|smollm2] [--repeats 2] [--rows 80] [--precisions fp32,int4,hf]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import common
import numpy as np

SIMD = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx_vnni",
        "amx_tile", "amx_int8", "amx_bf16")


def cpu_flags() -> dict[str, Any]:
    """The SIMD flags that decide which onnxruntime (MLAS) kernels run, from /proc/cpuinfo."""
    try:
        line = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("flags"))
    except (OSError, StopIteration):
        return {"cpu_flags": "unknown"}
    flags = set(line.split(":", 1)[1].split())
    return {"cpu_flags_simd": " ".join(f for f in SIMD if f in flags) or "(none of the SIMD flags)", "cpu_flags_count": len(flags)}


def pick_model(choice: str) -> str:
    if choice != "auto":
        return choice
    imported = common.RESULTS / "smollm2-import" / "models"
    return "smollm2" if imported.is_dir() and any(imported.glob("*/model/config.json")) else "tiny"


def onnx_folder(model: str, precision: str) -> Path:
    from autotune.passes.model_builder import ModelBuilderParams, build_onnx

    out = common.RESULTS / f"label_scoring-{model}-{precision}"
    if not (out / "genai_config.json").is_file():
        params = ModelBuilderParams(precision=precision, block_size=common.SETTINGS[model]["block_size"]) if precision != "fp32" \
            else ModelBuilderParams(precision="fp32")
        build_onnx(common.model_path(model), out, params, provider="CPUExecutionProvider",
                   work_dir=common.fresh(common.RESULTS / f"work-label_scoring-{model}"))
    return out


def rows_and_labels(model: str, folder: Path, n_rows: int, precision: str) -> tuple[Any, list[list[int]], list[list[int]], list[int]]:
    """The backend, each row's prompt ids (tokenised as the evaluator does), the label ids, the answers."""
    from autotune.data import encode_example, load_data
    from autotune.evaluation.backends import GenaiBackend, TorchBackend
    from autotune.evaluation.base import EvalModel

    cfg = common.load(common.config(model, common.RESULTS / "work-label_scoring-cfg"))
    data_cfg = cfg.data_configs[0].model_copy(update={"eval_dataset_size": n_rows})
    data = load_data(data_cfg)
    if precision == "hf":  # the baseline: the input model in PyTorch fp32
        backend: Any = TorchBackend(EvalModel(path=folder, kind="hf", key=""), provider="CPUExecutionProvider")
        backend.label_scoring = "batched (PyTorch, prompt KV cache reused per label)"
    else:
        backend = GenaiBackend(EvalModel(path=folder, kind="onnx", key=""), provider="CPUExecutionProvider")
    tok = backend.tokenizer
    eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
    labels = [list(tok(label, add_special_tokens=False)["input_ids"]) + eos for label in data.labels]
    prompts = [encode_example(tok, data.template.prompt(r), None, max_len=data.source_max_len)[0] for r in data.eval]
    answers = [data.labels.index(data.template.answer(r)) for r in data.eval]
    return backend, prompts, labels, answers


def measure(backend: Any, prompts: list[list[int]], labels: list[list[int]], repeats: int) -> dict[str, Any]:
    def old() -> list[tuple[list[float], float]]:
        return [backend.continuation_logprobs(p, labels) for p in prompts]

    def new() -> list[tuple[list[float], float]]:
        return backend.score_labels(prompts, labels)

    backend.score_labels(prompts[:4], labels)  # warm-up: sessions, allocations, first shapes
    [backend.continuation_logprobs(p, labels) for p in prompts[:4]]
    seconds: dict[str, list[float]] = {"old": [], "new": []}
    outputs: dict[str, Any] = {}
    for rep in range(repeats):
        for name in (("old", "new") if rep % 2 == 0 else ("new", "old")):
            began = time.perf_counter()
            outputs[name] = (old if name == "old" else new)()
            seconds[name].append(time.perf_counter() - began)
    pred = {k: [int(np.argmax(s)) for s, _ in v] for k, v in outputs.items()}
    diff = max(abs(a - b) for (so, _), (sn, _) in zip(outputs["old"], outputs["new"], strict=True) for a, b in zip(so, sn, strict=True))
    nll = max(abs(o[1] - n[1]) for o, n in zip(outputs["old"], outputs["new"], strict=True))
    return {"old_s": common.stats(seconds["old"]), "new_s": common.stats(seconds["new"]),
            "speedup": common.stats([o / n for o, n in zip(seconds["old"], seconds["new"], strict=True)]),
            "same_predictions": f"{sum(a == b for a, b in zip(pred['old'], pred['new'], strict=True))}/{len(prompts)}",
            "max_score_diff": diff, "max_prompt_nll_diff": nll}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["auto", *sorted(common.SETTINGS)], default="auto")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rows", type=int, default=0, help="held-out rows scored (default: 80 on SmolLM2, 160 on tiny)")
    parser.add_argument("--precisions", default="fp32,int4,hf", help="ONNX builds to compare, and hf: the PyTorch baseline")
    args = parser.parse_args()
    model = pick_model(args.model)
    n_rows = args.rows or (80 if model == "smollm2" else 160)
    report = common.Report("label_scoring", model, "Label scoring: per-row genai path vs batched onnxruntime path")
    report.data["machine"].update(cpu_flags())
    report.parts[2] = common.table(["machine / setting", "value"], [[k, v] for k, v in report.data["machine"].items()])
    print(report.parts[2], flush=True)  # the header first: a long run shows where it runs
    common.warm_imports()
    results: dict[str, Any] = {}
    for precision in args.precisions.split(","):
        folder = common.model_path(model) if precision == "hf" else onnx_folder(model, precision)
        backend, prompts, labels, _ = rows_and_labels(model, folder, n_rows, precision)
        results[precision] = measure(backend, prompts, labels, args.repeats)
        results[precision].update({"new_path": backend.label_scoring,
                                   "rows": len(prompts), "mean_prompt_tokens": float(np.mean([len(p) for p in prompts])),
                                   "label_tokens": [len(x) for x in labels]})
        print(f"{precision}: {results[precision]}", flush=True)
    report.data.update({"rows": n_rows, "results": results})
    report.section("Setup", (
        f"{n_rows} held-out rows of configs/data/tones.jsonl, 4 labels (tokens incl. EOS per label in the table), "
        f"{args.repeats} repeat(s) alternating which path goes first, after a 4-row warm-up of both. Old: "
        "`GenaiBackend.continuation_logprobs` row by row (onnxruntime-genai). New: `GenaiBackend.score_labels` "
        "(onnxruntime session on the same model.onnx, 16 rows per prefill, all labels per step)."))
    cols = ["new_path", "rows", "mean_prompt_tokens", "label_tokens", "old_s", "new_s", "speedup", "same_predictions", "max_score_diff",
            "max_prompt_nll_diff"]
    report.section("Results", common.table(["precision", *cols], [[p, *[r[c] for c in cols]] for p, r in results.items()]))
    report.write()


if __name__ == "__main__":
    sys.exit(main())
