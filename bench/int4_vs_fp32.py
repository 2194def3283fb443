"""The emitted int4 ONNX model against the PyTorch fp32 model with the same weights (the merged model).

One autotune single run (LoRA -> merge -> int4 ModelBuilder, no evaluation) gives both: the int4
ONNX folder and the merged fp32 HF folder from the cache. Both are measured with autotune's
evaluators: latency (32 prompt + 32 generated tokens, 2 warm-up + 10 timed, batch 1), accuracy
(label scoring), size on disk and peak RSS (a fresh process loading the model and generating).
Decode time per token is compared with the memory-bandwidth bound: weight bytes read per token /
this machine's memory bandwidth (a 512 MB numpy copy, best of 5, bytes read + written / seconds).
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import common
import numpy as np

MB = 1e6
# autotune's memory probe (load the model, generate 16 tokens) in a fresh process, then its VmHWM read
# independently here, as a cross-check of the footprint evaluator's own number.
PROBE = ("import runpy, sys; sys.argv = ['memory_probe', *sys.argv[1:]]; "
         "runpy.run_module('autotune.evaluation.memory_probe', run_name='__main__'); "
         "print([line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')][0])")


def bandwidth(size_mb: int = 512, tries: int = 5) -> float:
    """Bytes/s of a large array copy (read + write), best of ``tries``."""
    src = np.ones(size_mb * 1024 * 1024 // 8)
    dst = np.zeros_like(src)  # touched, so no page faults inside the timing
    best = float("inf")
    for _ in range(tries):
        began = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - began)
    return 2 * src.nbytes / best


def onnx_weight_bytes(folder: Path) -> dict[str, int]:
    """model.onnx.data's size, and the embedding table's bytes in it (only one row is read per token)."""
    import onnx

    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    lengths = {t.name: int({e.key: e.value for e in t.external_data}.get("length", 0)) for t in model.graph.initializer}
    embed = sum(n for name, n in lengths.items() if "embed_tokens" in name)
    data = folder / "model.onnx.data"
    total = data.stat().st_size if data.is_file() else sum(p.stat().st_size for p in folder.glob("*.onnx*"))
    return {"total": total, "embedding": embed}


def hf_weight_bytes(folder: Path) -> dict[str, int]:
    """Parameter bytes from the safetensors headers; the embedding counts as read only when tied to the LM head."""
    total = embed = 0
    for file in folder.glob("*.safetensors"):
        with file.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        for name, meta in header.items():
            if name != "__metadata__":
                size = meta["data_offsets"][1] - meta["data_offsets"][0]
                total += size
                embed += size if "embed_tokens" in name else 0
    tied = json.loads((folder / "config.json").read_text()).get("tie_word_embeddings", False)
    return {"total": total, "embedding": 0 if tied else embed}


def build(model: str, work: Path) -> tuple[Path, Path, Any]:
    """Run autotune once; return (int4 ONNX folder, merged fp32 HF folder, the data set)."""
    import autotune
    from autotune.cache import Cache
    from autotune.data import load_data

    cfg_dict = common.config(model, work)
    cfg_dict.pop("evaluators")
    cfg_dict["engine"]["evaluator"] = None
    cfg = common.load(cfg_dict)
    result = autotune.run(cfg)
    merge_key = next(p.key for p in result.record.passes if p.name == "merge")
    merged = Cache(cfg.engine.cache_dir).get(merge_key)
    assert merged is not None
    return result.report_dir / "model", merged[0], load_data(cfg.data_configs[0])


def measure(folder: Path, kind: str, data: Any, with_accuracy: bool) -> dict[str, float]:
    from autotune.evaluation.accuracy import AccuracyMetricType, AccuracyParams
    from autotune.evaluation.base import EvalContext, EvalModel
    from autotune.evaluation.footprint import FootprintMetricType, FootprintParams
    from autotune.evaluation.latency import LatencyMetricType, LatencyParams

    model = EvalModel(path=folder, kind=kind, key="")
    ctx = EvalContext(provider="CPUExecutionProvider", data=data)
    out: dict[str, float] = {}
    latency = LatencyMetricType().evaluate(model, LatencyParams(prompt_tokens=32, generate_tokens=32, warmup=2, repeats=10), ctx)
    for name in ("ttft_ms_p50", "decode_ms_per_token_p50", "tokens_per_s"):
        out[name] = latency[name].value
    footprint = FootprintMetricType().evaluate(model, FootprintParams(memory=True), ctx)
    out["size_mb"], out["peak_rss_mb_evaluator"] = footprint["size_mb"].value, footprint["peak_rss_mb"].value
    probe = subprocess.run([sys.executable, "-c", PROBE, str(folder), kind, ctx.provider, "16"], capture_output=True, text=True,
                           check=True, cwd=common.ROOT)
    out["peak_rss_mb"] = int(probe.stdout.strip().splitlines()[-1]) * 1024 / MB
    if with_accuracy:
        params = AccuracyParams(mode="label_scoring", perplexity=False)
        out["accuracy"] = AccuracyMetricType().evaluate(model, params, ctx)["accuracy"].value
    return out


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0], repeats=3)
    report = common.Report("int4_vs_fp32", args.model, "int4 ONNX vs PyTorch fp32, same weights")
    common.prepare(args.model)
    onnx_dir, hf_dir, data = build(args.model, common.fresh(common.RESULTS / f"work-int4_vs_fp32-{args.model}"))
    bw = [bandwidth() for _ in range(args.repeats)]
    sides = {"int4 ONNX (onnxruntime-genai)": (onnx_dir, "onnx", onnx_weight_bytes(onnx_dir)),
             "fp32 PyTorch (merged)": (hf_dir, "hf", hf_weight_bytes(hf_dir))}
    results: dict[str, Any] = {}
    for label, (folder, kind, weights) in sides.items():
        reps = [measure(folder, kind, data, with_accuracy=rep == 0) for rep in range(args.repeats)]
        s = {k: common.stats([r[k] for r in reps if k in r]) for k in reps[0]}
        bound_ms = [1e3 * weights["total"] / b for b in bw]
        read_ms = [1e3 * (weights["total"] - weights["embedding"]) / b for b in bw]
        s["weight_mb"], s["read_mb"] = weights["total"] / MB, (weights["total"] - weights["embedding"]) / MB
        s["bound_ms"] = common.stats(bound_ms)
        s["measured_over_bound"] = common.stats([r["decode_ms_per_token_p50"] / min(bound_ms) for r in reps])
        s["measured_over_read_bound"] = common.stats([r["decode_ms_per_token_p50"] / min(read_ms) for r in reps])
        results[label] = s
        print(f"{label}: measured", flush=True)

    report.data.update({"settings": common.SETTINGS[args.model], "bandwidth_gb_s": common.stats([b / 1e9 for b in bw]),
                        "models": {k: str(v[0]) for k, v in sides.items()}, "results": results})
    report.section("Setup", (
        f"{args.repeats} repeat(s) of latency and peak RSS (accuracy once: it is deterministic), median (min–max) of the per-repeat p50. "
        f"Held-out rows: {len(data.eval)}. Memory bandwidth (512 MB numpy copy, best of 5, read + write): "
        f"{common.fmt(common.stats([b / 1e9 for b in bw]))} GB/s. peak_rss_mb: VmHWM of a fresh process running autotune's memory "
        "probe, read here; peak_rss_mb_evaluator: what autotune's footprint evaluator reports (VmHWM inside its probe; "
        "before a fix it used ru_maxrss, which a child inherits from its parent)."))
    cols = ["ttft_ms_p50", "decode_ms_per_token_p50", "tokens_per_s", "accuracy", "size_mb", "peak_rss_mb", "peak_rss_mb_evaluator"]
    report.section("Measurements", common.table(["model", *cols], [[k, *[v[c] for c in cols]] for k, v in results.items()]))
    report.section("Decode against the memory-bandwidth bound", common.table(
        ["model", "weight MB (int4: model.onnx.data; fp32: parameters)", "bound ms/token", "measured / bound",
         "MB read per token (embedding table excluded unless tied)", "measured / that bound"],
        [[k, v["weight_mb"], v["bound_ms"], v["measured_over_bound"], v["read_mb"], v["measured_over_read_bound"]]
         for k, v in results.items()]))
    report.write()


if __name__ == "__main__":
    main()
