"""Size on disk of the model folder and peak resident memory of loading it and generating.

Size is read from the folder. Memory is measured in a fresh child process (its own VmHWM), so what the
parent process trained or loaded before does not leak into the number: the same process that measured
latency when the evaluation has a latency metric, else one of its own.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from autotune.evaluation import memory_probe
from autotune.evaluation.base import (
    EvalContext,
    EvalModel,
    Metric,
    MetricType,
    MetricTypeParams,
    SubType,
    deprecated_names,
    register_metric_type,
)
from autotune.evaluation.latency import PROBE_KEY


class FootprintParams(MetricTypeParams):
    memory: bool = True
    generate_tokens: int = Field(16, gt=0)


def pass_reports() -> frozenset[str]:
    """What passes write beside a model about how they made it (seconds, scores; each pass's ``REPORT_FILES``): not part
    of what is deployed, and their length varies with timings, so counting them made the size of identical weights
    differ by bytes. Imported when first needed: the latency process, which needs none, never loads the passes."""
    from autotune.passes import PASS_REGISTRY

    return frozenset().union(*(cls.REPORT_FILES for _, cls in PASS_REGISTRY.items()))


def folder_bytes(path: object) -> int:
    from pathlib import Path

    reports = pass_reports()
    return sum(p.stat().st_size for p in Path(str(path)).rglob("*") if p.is_file() and p.name not in reports)


@register_metric_type("size", "memory")
class FootprintMetricType(MetricType):
    type_name = "footprint"
    version = 2  # 2: peak memory from the latency process when there is one
    Params = FootprintParams
    per_structure = True  # one measurement per structure key: the same graph and settings run alike, whatever the weights
    SUB_TYPES: ClassVar[dict[str, SubType]] = {
        "size_mb": SubType("MB", False, "size on disk (MB)", "size"),
        "peak_rss_mb": SubType("MB", False, "peak memory (MB)", "memory"),
        "model_rss_mb": SubType("MB", False, "model memory (MB)", "memory"),
    }
    ALIASES: ClassVar[dict[str, str]] = {"size": "size_mb", "disk_mb": "size_mb", "memory": "peak_rss_mb"}
    # After latency: its fresh process already measured this model's peak memory.
    run_after = ("latency",)

    def evaluate(self, model: EvalModel, params: FootprintParams, ctx: EvalContext) -> dict[str, Metric]:
        metrics = {"size_mb": self.metric("size_mb", folder_bytes(model.path) / 1e6)}
        if params.memory:
            probe = ctx.shared.get(PROBE_KEY)
            if probe is not None:
                where = "the latency metric's fresh process (model loaded once for both)"
            else:
                probe = memory_probe.run_probe(model, provider=ctx.provider, tokens=params.generate_tokens)
                where = f"a fresh process generating {params.generate_tokens} tokens"
            details = {k: v for k, v in probe.items() if k != "latency"} | {"measured_in": where}
            # Without /proc/self/status the probe could only read ru_maxrss, which a child inherits from its
            # parent: possibly the study process's peak, not the model's. Kept, but marked untrustworthy.
            flag = None
            if probe.get("rss_source", memory_probe.OWN_PEAK) != memory_probe.OWN_PEAK:
                flag = "peak read from ru_maxrss (no VmHWM here): may be the parent process's peak"
            metrics["peak_rss_mb"] = self.metric("peak_rss_mb", probe["peak_rss_mb"], flag=flag, details=details)
            metrics["model_rss_mb"] = self.metric("model_rss_mb", probe["peak_rss_mb"] - probe["runtime_rss_mb"], flag=flag,
                                                  details={"note": "peak minus the RSS after importing the runtime, before loading",
                                                           "measured_in": where})
        return metrics


__getattr__ = deprecated_names(__name__, {"FootprintEvaluator": "FootprintMetricType"}, globals())  # the 0.1 name, for one release
