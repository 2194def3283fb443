"""Latency on the target provider: warm-up, timed repeats, prefill (TTFT) and decode reported apart."""

from __future__ import annotations

import statistics
from typing import ClassVar

import numpy as np
from pydantic import Field

from autotune.evaluation.backends import open_backend
from autotune.evaluation.base import (
    EvalContext,
    EvalModel,
    Evaluator,
    EvaluatorParams,
    Metric,
    environment,
    register_evaluator,
)

FILLER = (
    "The quick brown fox jumps over the lazy dog while the weather report promises rain for the weekend and "
    "everyone in the office plans a short trip to the coast to see the old lighthouse and the harbour. "
)
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
    Params = LatencyParams
    SUB_TYPES: ClassVar[dict[str, tuple[str, bool]]] = {
        **{f"ttft_ms_{s}": ("ms", False) for s in STATS},
        **{f"decode_ms_per_token_{s}": ("ms/token", False) for s in STATS},
        **{f"e2e_ms_{s}": ("ms", False) for s in STATS},
        "tokens_per_s": ("tokens/s", True),
    }
    # Olive's latency sub-types are end-to-end times.
    ALIASES: ClassVar[dict[str, str]] = {s: f"e2e_ms_{s}" for s in STATS}

    def evaluate(self, model: EvalModel, params: LatencyParams, ctx: EvalContext) -> dict[str, Metric]:
        backend = open_backend(model, provider=ctx.provider, trust_remote_code=ctx.trust_remote_code)
        tok = backend.tokenizer
        filler = list(tok(FILLER, add_special_tokens=False)["input_ids"])
        ids = (filler * (params.prompt_tokens // len(filler) + 1))[: params.prompt_tokens]
        for _ in range(params.warmup):
            backend.generate(ids, params.generate_tokens, ignore_eos=True)
        ttft, decode, e2e, rates = [], [], [], []
        for _ in range(params.repeats):
            tokens, first, steps = backend.generate(ids, params.generate_tokens, ignore_eos=True)
            per_token = statistics.fmean(steps) if steps else 0.0
            ttft.append(first * 1e3)
            decode.append(per_token * 1e3)
            e2e.append((first + sum(steps)) * 1e3)
            rates.append(len(tokens) / (first + sum(steps)))
        setup = {
            "backend": "onnxruntime-genai" if model.kind == "onnx" else "pytorch",
            "provider": ctx.provider if model.kind == "onnx" else "torch-cpu",
            "batch_size": params.batch_size,
            "prompt_tokens": len(ids),
            "generate_tokens": params.generate_tokens,
            "warmup": params.warmup,
            "repeats": params.repeats,
            **environment(),
        }
        metrics: dict[str, Metric] = {}
        for prefix, values, unit in (("ttft_ms", ttft, "ms"), ("decode_ms_per_token", decode, "ms/token"), ("e2e_ms", e2e, "ms")):
            stats = summarise(values)
            flag = f"cv {stats['cv']:.2f} > {params.cv_threshold}" if stats["cv"] > params.cv_threshold else None
            for s in STATS:
                metrics[f"{prefix}_{s}"] = Metric(f"{prefix}_{s}", stats[s], unit, False, n=params.repeats, flag=flag,
                                                  details={"cv": stats["cv"], "min": stats["min"], "max": stats["max"], **setup})
        rate = summarise(rates)
        metrics["tokens_per_s"] = Metric(
            "tokens_per_s", rate["avg"], "tokens/s", True, n=params.repeats,
            flag=f"cv {rate['cv']:.2f} > {params.cv_threshold}" if rate["cv"] > params.cv_threshold else None,
            details={"cv": rate["cv"], **setup},
        )
        return metrics
