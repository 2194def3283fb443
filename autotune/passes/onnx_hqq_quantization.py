"""The ``OnnxHqqQuantization`` pass, withdrawn: registered so that a config naming it gets the reason at validate.

ONNX Runtime's HQQ (``OnnxHqqQuantization``, and ``algorithm: hqq`` of the mixed pass) is withdrawn and
refused at validate: on a fine-tuned SmolLM2 it lost 49 accuracy points against fp32 (bench/README.md
section 8) with every dequantized weight within a few percent of fp32, a cause not found.
"""

from __future__ import annotations

from typing import Any

from autotune.errors import ConfigError
from autotune.passes.base import register_pass
from autotune.passes.weight_only_pass import HqqParams, WeightOnlyPass

HQQ_WITHDRAWN = ("ONNX Runtime's HQQ is withdrawn: it lost 49 accuracy points on a fine-tuned SmolLM2 "
                 "(bench/README.md section 8); use OnnxGptqQuantization")


@register_pass("hqq", "OnnxHQQ")
class OnnxHqqQuantization(WeightOnlyPass):
    """Withdrawn (see the module note): registered so that a config naming it gets the reason at validate."""

    type_name = "OnnxHqqQuantization"
    Params = HqqParams

    def check(self, params: HqqParams, *, provider: str, origin: str) -> None:  # type: ignore[override]
        raise ConfigError(f"{origin.removesuffix('.config')}.type", f"OnnxHqqQuantization: {HQQ_WITHDRAWN}")

    def algorithm(self, params: Any) -> str:
        raise ConfigError("OnnxHqqQuantization", HQQ_WITHDRAWN)
