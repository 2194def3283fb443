"""Size on disk of the model folder and peak resident memory of loading it and generating.

Memory is measured in a fresh child process (its own VmHWM), so what the parent process trained or
loaded before does not leak into the number.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import ClassVar

from pydantic import Field

from autotune.evaluation.base import (
    EvalContext,
    EvalModel,
    Evaluator,
    EvaluatorParams,
    Metric,
    SubType,
    register_evaluator,
)


class FootprintParams(EvaluatorParams):
    memory: bool = True
    generate_tokens: int = Field(16, gt=0)


def folder_bytes(path: object) -> int:
    from pathlib import Path

    return sum(p.stat().st_size for p in Path(str(path)).rglob("*") if p.is_file())


@register_evaluator("size", "memory")
class FootprintEvaluator(Evaluator):
    type_name = "footprint"
    Params = FootprintParams
    SUB_TYPES: ClassVar[dict[str, SubType]] = {
        "size_mb": SubType("MB", False, "size on disk (MB)", "size"),
        "peak_rss_mb": SubType("MB", False, "peak memory (MB)", "memory"),
        "model_rss_mb": SubType("MB", False, "model memory (MB)", "memory"),
    }
    ALIASES: ClassVar[dict[str, str]] = {"size": "size_mb", "disk_mb": "size_mb", "memory": "peak_rss_mb"}

    def evaluate(self, model: EvalModel, params: FootprintParams, ctx: EvalContext) -> dict[str, Metric]:
        metrics = {"size_mb": self.metric("size_mb", folder_bytes(model.path) / 1e6)}
        if params.memory:
            cmd = [sys.executable, "-m", "autotune.evaluation.memory_probe", str(model.path), model.kind,
                   ctx.provider, str(params.generate_tokens)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise RuntimeError(f"memory probe failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
            probe = json.loads(proc.stdout.strip().splitlines()[-1])
            metrics["peak_rss_mb"] = self.metric("peak_rss_mb", probe["peak_rss_mb"], details=probe)
            metrics["model_rss_mb"] = self.metric("model_rss_mb", probe["peak_rss_mb"] - probe["runtime_rss_mb"],
                                                  details={"note": "peak minus the RSS after importing the runtime, before loading"})
        return metrics
