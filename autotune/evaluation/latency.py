"""Latency on the target provider: warm-up, timed repeats, prefill (TTFT) and decode reported apart."""

from __future__ import annotations

import statistics
from typing import ClassVar

import numpy as np
from pydantic import Field

from autotune.evaluation import memory_probe
from autotune.evaluation.base import (
    EvalContext,
    EvalModel,
    Evaluator,
    EvaluatorParams,
    MeasurementError,
    Metric,
    SubType,
    environment,
    register_evaluator,
)
from autotune.threads import session_threads, usable_cpus

# ctx.shared key of the fresh process's result (latency samples and peak memory) for this model.
PROBE_KEY = "fresh_process_probe"
STATS = ("avg", "p50", "p90", "p99")


class LatencyParams(EvaluatorParams):
    prompt_tokens: int = Field(32, gt=0)
    generate_tokens: int = Field(32, gt=1)
    batch_size: int = Field(1, ge=1, le=1, description="onnxruntime-genai is measured one sequence at a time")
    warmup: int = Field(2, ge=0)
    repeats: int = Field(10, ge=2)
    # Flag a measurement whose coefficient of variation across repeats exceeds this.
    cv_threshold: float = Field(0.15, gt=0)


def summarise(values_ms: list[float]) -> dict[str, float]:
    arr = np.asarray(values_ms, dtype=float)
    return {
        "avg": float(arr.mean()),
        "p50": float(np.percentile(arr, 50)),
        "p90": float(np.percentile(arr, 90)),
        "p99": float(np.percentile(arr, 99)),
        "min": float(arr.min()),
        "max": float(arr.max()),
        "cv": float(arr.std(ddof=1) / arr.mean()) if len(arr) > 1 and arr.mean() > 0 else 0.0,
    }


@register_evaluator()
class LatencyEvaluator(Evaluator):
    type_name = "latency"
    version = 2  # 2: measured in a fresh process (that also measures peak memory), not the study process
    Params = LatencyParams
    SUB_TYPES: ClassVar[dict[str, SubType]] = {
        **{f"ttft_ms_{s}": SubType("ms", False, f"time to first token {s} (ms)", "latency") for s in STATS},
        **{f"decode_ms_per_token_{s}": SubType("ms/token", False, f"decode {s} (ms/token)", "latency") for s in STATS},
        **{f"e2e_ms_{s}": SubType("ms", False, f"end-to-end {s} (ms)", "latency") for s in STATS},
        "tokens_per_s": SubType("tokens/s", True, "throughput (tokens/s)", "latency"),
    }
    # Olive's latency sub-types are end-to-end times.
    ALIASES: ClassVar[dict[str, str]] = {s: f"e2e_ms_{s}" for s in STATS}

    def evaluate(self, model: EvalModel, params: LatencyParams, ctx: EvalContext) -> dict[str, Metric]:
        # A fresh process times generation and then reads its own peak memory; the footprint metric of
        # the same evaluation takes that peak from ctx.shared instead of loading the model again.
        settings = {"prompt_tokens": params.prompt_tokens, "generate_tokens": params.generate_tokens, "warmup": params.warmup,
                    "repeats": params.repeats, "trust_remote_code": ctx.trust_remote_code}
        probe = memory_probe.run_probe(model, provider=ctx.provider, tokens=params.generate_tokens, settings=settings)
        ctx.shared[PROBE_KEY] = probe
        measured = probe["latency"]
        ttft, decode, e2e, rates = [], [], [], []
        for i, sample in enumerate(measured["samples"]):
            first, steps = sample["ttft_s"], sample["steps_s"]
            if not steps:
                # 0 ms/token would be the best possible score for a measurement that did not happen.
                raise MeasurementError(
                    f"latency: repeat {i + 1} of {len(measured['samples'])} timed no decode step (generation stopped after "
                    f"{sample['tokens']} token(s) of {params.generate_tokens}; prompt {measured['prompt_tokens']} tokens, "
                    "is the context length too short?)")
            per_token = statistics.fmean(steps)
            ttft.append(first * 1e3)
            decode.append(per_token * 1e3)
            e2e.append((first + sum(steps)) * 1e3)
            rates.append(sample["tokens"] / (first + sum(steps)))
        setup = {
            "backend": "onnxruntime-genai" if model.kind == "onnx" else "pytorch",
            "provider": ctx.provider if model.kind == "onnx" else "torch-cpu",
            "batch_size": params.batch_size,
            "prompt_tokens": measured["prompt_tokens"],
            "process": "fresh (also measures peak memory)",
            "generate_tokens": params.generate_tokens,
            "warmup": params.warmup,
            "repeats": params.repeats,
            # run --jobs: measured with this share of the cores while other jobs ran (the final re-measure
            # widens its candidates by cpus / cpu_share, see autotune.selection.pareto.latency_uncertainty)
            "cpu_share": session_threads(),
            "cpus": usable_cpus(),
            **environment(),
        }
        metrics: dict[str, Metric] = {}
        for prefix, values in (("ttft_ms", ttft), ("decode_ms_per_token", decode), ("e2e_ms", e2e)):
            stats = summarise(values)
            flag = f"cv {stats['cv']:.2f} > {params.cv_threshold}" if stats["cv"] > params.cv_threshold else None
            for s in STATS:
                metrics[f"{prefix}_{s}"] = self.metric(f"{prefix}_{s}", stats[s], n=params.repeats, flag=flag,
                                                       details={"cv": stats["cv"], "min": stats["min"], "max": stats["max"], **setup})
        rate = summarise(rates)
        metrics["tokens_per_s"] = self.metric(
            "tokens_per_s", rate["avg"], n=params.repeats,
            flag=f"cv {rate['cv']:.2f} > {params.cv_threshold}" if rate["cv"] > params.cv_threshold else None,
            details={"cv": rate["cv"], **setup},
        )
        return metrics
