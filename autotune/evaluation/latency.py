"""Latency on the target provider: warm-up, timed repeats, prefill (TTFT) and decode reported apart.

Repeats run to a stated precision, not a fixed count: after ``repeats`` generations (the minimum) the
fresh process keeps generating until the distribution-free 95 % interval of the median decode ms/token
(order statistics of the binomial, :mod:`autotune.evaluation.precision`) is within ``precision`` of the median, or until
``max_repeats`` / ``max_seconds`` (:func:`repeat_until_precise`). The p50 metrics carry that interval
(``ci_low``/``ci_high``: the trials table, the console and the report show it beside the value);
``details`` say how many repeats ran and why they stopped.
"""

from __future__ import annotations

import statistics
from typing import ClassVar

import numpy as np
from pydantic import Field, model_validator

from autotune.evaluation import memory_probe
from autotune.evaluation.base import (
    EvalContext,
    EvalModel,
    MeasurementError,
    Metric,
    MetricType,
    MetricTypeParams,
    SubType,
    deprecated_names,
    environment,
    register_metric_type,
)
from autotune.evaluation.precision import median_ci
from autotune.threads import session_threads, usable_cpus

# ctx.shared key of the fresh process's result (latency samples and peak memory) for this model.
PROBE_KEY = "fresh_process_probe"
STATS = ("avg", "p50", "p90", "p99")


class LatencyParams(MetricTypeParams):
    prompt_tokens: int = Field(32, gt=0)
    # Long generations: each repeat's decode ms/token is a mean over this many steps.
    generate_tokens: int = Field(64, gt=1)
    batch_size: int = Field(1, ge=1, le=1, description="onnxruntime-genai is measured one sequence at a time")
    warmup: int = Field(2, ge=0)
    repeats: int = Field(6, ge=2, description="timed repeats at least (6 is the fewest with a 95 % interval of the median)")
    # Repeat until the median decode ms/token's 95 % interval is within +-precision of it (0: exactly `repeats`) ...
    precision: float = Field(0.03, ge=0, lt=1)
    # ... or until either cap.
    max_repeats: int = Field(40, ge=2)
    max_seconds: float = Field(30.0, gt=0)
    # Flag a measurement whose coefficient of variation across repeats exceeds this.
    cv_threshold: float = Field(0.15, gt=0)

    @model_validator(mode="after")
    def _caps(self) -> LatencyParams:
        if self.max_repeats < self.repeats:
            raise ValueError(f"max_repeats ({self.max_repeats}) is below repeats ({self.repeats})")
        return self


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


@register_metric_type()
class LatencyMetricType(MetricType):
    type_name = "latency"
    # 2: measured in a fresh process (that also measures peak memory), not the study process; 3: repeats to a
    # stated precision, the median's interval reported
    version = 3
    Params = LatencyParams
    per_structure = True  # one measurement per structure key: the same graph and settings run alike, whatever the weights
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
                    "repeats": params.repeats, "max_repeats": params.max_repeats, "max_seconds": params.max_seconds,
                    "precision": params.precision, "trust_remote_code": ctx.trust_remote_code}
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
            "repeats": len(decode),
            "repeats_min_max": [params.repeats, params.max_repeats],
            "precision": params.precision,
            # why the repeats stopped: "precise" (the median's 95 % interval within +-precision), or a cap
            "stopped_by": measured.get("stopped_by", "fixed"),
            # run --jobs: measured with this share of the cores while other jobs ran (the final re-measure
            # widens its candidates by cpus / cpu_share, see autotune.selection.pareto.latency_uncertainty)
            "cpu_share": session_threads(),
            "cpus": usable_cpus(),
            **environment(),
        }
        metrics: dict[str, Metric] = {}
        n = len(decode)
        for prefix, values in (("ttft_ms", ttft), ("decode_ms_per_token", decode), ("e2e_ms", e2e)):
            stats = summarise(values)
            flag = f"cv {stats['cv']:.2f} > {params.cv_threshold}" if stats["cv"] > params.cv_threshold else None
            interval = median_ci(values)
            median = statistics.median(values)
            if prefix == "decode_ms_per_token" and params.precision > 0 and setup["stopped_by"] != "precise":
                flag = flag or f"median not within +-{params.precision:.0%} after {n} repeats ({setup['stopped_by']})"
            for s in STATS:
                details = {"cv": stats["cv"], "min": stats["min"], "max": stats["max"], **setup}
                ci = {}
                if s == "p50" and interval is not None:  # the median's distribution-free 95 % interval
                    ci = {"ci_low": interval[0], "ci_high": interval[1]}
                    details["ci_relative"] = max(median - interval[0], interval[1] - median) / median if median else None
                metrics[f"{prefix}_{s}"] = self.metric(f"{prefix}_{s}", stats[s], n=n, flag=flag, details=details, **ci)
        rate = summarise(rates)
        metrics["tokens_per_s"] = self.metric(
            "tokens_per_s", rate["avg"], n=n,
            flag=f"cv {rate['cv']:.2f} > {params.cv_threshold}" if rate["cv"] > params.cv_threshold else None,
            details={"cv": rate["cv"], **setup},
        )
        return metrics


__getattr__ = deprecated_names(__name__, {"LatencyEvaluator": "LatencyMetricType"}, globals())  # the 0.1 name, for one release
