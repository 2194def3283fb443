"""The ``OnnxMixedPrecisionQuantization`` pass: an int4 body with the layers most sensitive on calibration data
(:mod:`autotune.quant.sensitivity`) kept at int8 or fp32, through the weight-only passes' shared run
(:mod:`autotune.passes.weight_only_pass`)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np

from autotune.errors import ConfigError
from autotune.passes.base import register_pass, searchable
from autotune.passes.onnx_hqq_quantization import HQQ_WITHDRAWN
from autotune.passes.weight_only_pass import Int4Params, WeightOnlyPass


class MixedPrecisionParams(Int4Params):
    CONDITIONS: ClassVar[dict[str, tuple[str, tuple[Any, ...]]]] = {
        "damp_percent": ("algorithm", ("gptq",)),
        "is_symmetric": ("algorithm", ("rtn", "gptq")),
        "int8_accuracy_level": ("high_precision", ("int8",)),
    }
    # The int4 body's algorithm; the most sensitive layers go to ``high_precision`` instead.
    algorithm: Literal["rtn", "k_quant", "gptq", "hqq"] = searchable("rtn", space=["rtn", "k_quant", "gptq"])
    budget: float = searchable(0.1, space=[0.05, 0.1, 0.2], ge=0, le=1)
    budget_unit: Literal["layers", "bytes"] = searchable("layers", space=["layers", "bytes"])
    high_precision: Literal["int8", "fp32"] = searchable("int8", space=["int8", "fp32"])
    is_symmetric: bool = searchable(True, space=[True, False])
    calibration_rows: int = searchable(32, space=[16, 64], ge=1, le=4096)
    damp_percent: float = searchable(0.01, space=[0.01, 0.1], gt=0, lt=1)
    train_data_config: str | None = None
    calibration_seed: int = 0
    # The accuracy_level of the int8 layers (``accuracy_level`` is the int4 body's). Unset (None): 4 on the
    # CPU provider, where 8-bit MatMulNBits is fast only with int8 activations (int8_accuracy_level's
    # docstring has the measurement), the body's level on other providers. A value given is used as it is.
    int8_accuracy_level: Literal[0, 1, 2, 3, 4] | None = None

    def resolved(self) -> dict[str, Any]:
        out = super().resolved()
        if out.get("int8_accuracy_level", 0) is None:
            del out["int8_accuracy_level"]  # unset: the keys and records of the mixed pass as before it existed
        return out


@register_pass("mixed_precision", "OnnxMixedPrecision")
class OnnxMixedPrecisionQuantization(WeightOnlyPass):
    """int4 body (``algorithm``) with the layers most sensitive on calibration data kept at int8 or fp32,
    within ``budget`` (a share of the layers, or of the weights)."""

    type_name = "OnnxMixedPrecisionQuantization"
    Params = MixedPrecisionParams
    uses_data = True
    selects_by_weights = True

    def check(self, params: MixedPrecisionParams, *, provider: str, origin: str) -> None:  # type: ignore[override]
        if params.budget == 0:
            raise ConfigError(f"{origin}.budget", "a budget of 0 keeps no layer high; use the plain int4 pass instead")
        if params.algorithm == "hqq":
            raise ConfigError(f"{origin}.algorithm", f"hqq: {HQQ_WITHDRAWN}")

    def algorithm(self, params: Any) -> str:
        return params.algorithm

    def keep_high(self, model: Any, params: Any, feeds: list[dict[str, np.ndarray]] | None,
                  hessians: dict[str, np.ndarray] | None, solved: dict[str, Any]) -> tuple[list[str], dict[str, float]]:
        from autotune.quant.sensitivity import choose, sensitivities, weight_sizes

        # scored with the body's own algorithm (GPTQ: the body's Hessians and solve, handed on in ``solved``), on
        # ONNX Runtime's grid
        scores = sensitivities(model, feeds or [], algorithm=params.algorithm, block_size=params.block_size,
                               symmetric=params.is_symmetric, hessians=hessians, damp_percent=params.damp_percent,
                               exclude=frozenset(params.nodes_to_exclude), solved=solved)
        sizes = {k: v for k, v in weight_sizes(model).items() if k in scores}
        return choose(scores, sizes, params.budget, params.budget_unit), scores
