"""The ``OnnxGptqQuantization`` pass: data-aware int4 (GPTQ, :mod:`autotune.quant.gptq`) over a builder fp32 ONNX
model, through the weight-only passes' shared run (:mod:`autotune.passes.weight_only_pass`)."""

from __future__ import annotations

from typing import Any

from autotune.passes.base import register_pass, searchable
from autotune.passes.weight_only_pass import Int4Params, WeightOnlyPass


class GptqParams(Int4Params):
    is_symmetric: bool = searchable(True, space=[True, False])
    calibration_rows: int = searchable(64, space=[32, 128], ge=1, le=4096)
    damp_percent: float = searchable(0.01, space=[0.01, 0.1], gt=0, lt=1)
    train_data_config: str | None = None
    calibration_seed: int = 0


@register_pass("gptq", "OnnxGPTQ")
class OnnxGptqQuantization(WeightOnlyPass):
    """GPTQ (:mod:`autotune.quant.gptq`): block-wise int4 with Hessian-based error compensation, calibrated
    on the task's training rows."""

    type_name = "OnnxGptqQuantization"
    Params = GptqParams
    uses_data = True

    def algorithm(self, params: Any) -> str:
        return "gptq"
