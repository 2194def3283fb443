"""The shared run of the weight-only int4 passes (``WeightOnlyPass``: the GPTQ, HQQ and mixed-precision passes), over a
builder fp32 ONNX model, and the parameters they share.

Each takes a builder fp32 ONNX folder (or an HF folder, first built at fp32), quantizes its MatMuls to
MatMulNBits with ONNX Runtime's quantizers (:mod:`autotune.quant.weight_only`), shares the quantized LM
head with a tied embedding as the builder does, and writes a folder onnxruntime-genai loads plus
``quant_stats.json`` (seconds, peak RSS, calibration rows, bits per layer, the layers kept high).
Calibration reads the training split only (:mod:`autotune.quant.calibration`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from autotune.builder.onnx_folder import MODEL_FILE, copy_companions, fp32_source, save_with_external_data
from autotune.context import PassContext
from autotune.models.handle import ModelHandle
from autotune.passes.base import Pass, PassParams, searchable
from autotune.quant.weight_only import (
    PassCost,
    graph_precisions,
    quantize_8bit,
    quantize_int4,
    quiet_quantizer,
    tie_embedding,
)

STATS_FILE = "quant_stats.json"


def int8_accuracy_level(provider: str, body_level: int, explicit: int | None = None) -> int:
    """The accuracy_level of the mixed pass's 8-bit layers: ``explicit`` (the pass's ``int8_accuracy_level``)
    when the config sets it, on every provider; unset, 4 on the CPU provider and the body's level elsewhere.
    Why 4 by default: ONNX Runtime 1.32's CPU MatMulNBits has no fast 8-bit kernel with float activations: at
    accuracy_level 0 a 576x576 8-bit MatMul decoded 14x slower than fp32 (14.5 ms against 1.0 ms for 30 of
    them, one thread), while at level 4 (int8 activations) it was the fastest of all (0.21 ms;
    bench/matmulnbits_kernels.py, bench/README.md section 8). Inheriting the body's default 0 made GPTQ + 10 %
    int8 decode at 35 ms/token against 18 for plain GPTQ (issue 14)."""
    if explicit is not None:
        return explicit
    return 4 if provider == "CPUExecutionProvider" else body_level


class HqqParams(PassParams):
    block_size: Literal[16, 32, 64, 128, 256] = searchable(32, space=[32, 128])
    # MatMul node names (of the fp32 graph) left in float.
    nodes_to_exclude: list[str] = Field(default_factory=list)


class Int4Params(HqqParams):
    accuracy_level: Literal[0, 1, 2, 3, 4] = searchable(0, space=[0, 4])


class WeightOnlyPass(Pass):
    """Shared run: fp32 source -> (calibration) -> int4 -> high-precision layers -> tied embedding -> folder."""

    accepts = ("onnx", "hf")
    output_kind = "onnx"
    provider_in_key = True
    selects_by_weights = False  # keep_high reads the float weights
    REPORT_FILES = frozenset({STATS_FILE})
    weight_precision = "int4"

    def algorithm(self, params: Any) -> str:
        raise NotImplementedError

    def keep_high(self, model: Any, params: Any, feeds: list[dict[str, np.ndarray]] | None,
                  hessians: dict[str, np.ndarray] | None, solved: dict[str, Any]) -> tuple[list[str], dict[str, float]]:
        """The layers kept above 4 bits and every layer's sensitivity score (none by default); a GPTQ score may
        leave each layer's GPTQ solution in ``solved`` for the body to pack."""
        return [], {}

    def run(self, model: ModelHandle, params: Any, ctx: PassContext, output: Path) -> None:  # type: ignore[override]
        import onnx
        from onnx.external_data_helper import load_external_data_for_model

        cost = PassCost()
        source = fp32_source(model, ctx)
        # The weights are read only after calibration: GPTQ's forward passes read them from the file, and two
        # copies of them (here and in the session) would be the pass's peak.
        graph = onnx.load(str(source / MODEL_FILE), load_external_data=False)
        algorithm = self.algorithm(params)
        feeds = None
        hessians = None
        timings: dict[str, float] = {}
        rows = getattr(params, "calibration_rows", 0)
        if rows:
            if ctx.data is None:
                raise RuntimeError(f"{self.type_name} needs calibration data but the pipeline passed none")
            from autotune.quant.calibration import calibration_feeds, input_hessians, weight_matmuls

            feeds = calibration_feeds(source, graph, ctx.data, rows, seed=params.calibration_seed)
            if algorithm == "gptq":
                skip = set(params.nodes_to_exclude)
                inputs = sorted({act for name, (act, _) in weight_matmuls(graph).items() if name not in skip})
                hessians = input_hessians(source / MODEL_FILE, feeds, inputs, timings=timings)
        # Plain GPTQ reads each float weight from the file as it quantizes it: the fp32 weights are never all
        # in memory. A pass that selects layers by their weights first needs them all.
        lazy = hessians is not None and not self.selects_by_weights
        if not lazy:
            load_external_data_for_model(graph, str(source))
        began = time.perf_counter()
        solved: dict[str, Any] = {}  # GPTQ solved once: the sensitivity's codes, packed by the body
        high, scores = self.keep_high(graph, params, feeds, hessians, solved)
        if scores:
            timings["sensitivity"] = time.perf_counter() - began
        symmetric = getattr(params, "is_symmetric", True)
        int8_level = int8_accuracy_level(ctx.provider, getattr(params, "accuracy_level", 0),
                                         getattr(params, "int8_accuracy_level", None))
        common = {"block_size": params.block_size, "accuracy_level": getattr(params, "accuracy_level", 0)}
        with quiet_quantizer():
            exclude = [*params.nodes_to_exclude, *high]
            graph = quantize_int4(graph, algorithm, symmetric=symmetric, exclude=exclude, hessians=hessians,
                                  damp_percent=getattr(params, "damp_percent", 0.01), weights_dir=source, timings=timings,
                                  solved=solved, **common)
            solved.clear()  # the layers kept high: not packed
            if lazy:
                load_external_data_for_model(graph, str(source))  # what GPTQ left float: norms, the embedding
            if high and getattr(params, "high_precision", "fp32") == "int8":
                graph = quantize_8bit(graph, high, symmetric=symmetric, block_size=params.block_size,
                                      accuracy_level=int8_level)
        tied = tie_embedding(graph)
        save_with_external_data(graph, output)
        copy_companions(source, output)
        bits = graph_precisions(graph)
        stats = {"algorithm": algorithm, **cost.stats(), "seconds_by_step": {k: round(v, 3) for k, v in timings.items()},
                 "calibration_rows": len(feeds or []),
                 "layers_by_bits": {str(b): sum(1 for v in bits.values() if v == b) for b in sorted(set(bits.values()))},
                 "kept_high": high, "tied_embedding": tied,
                 **({"int8_accuracy_level": int8_level} if high and getattr(params, "high_precision", "fp32") == "int8" else {}),
                 "sensitivity": dict(sorted(scores.items(), key=lambda kv: -kv[1]))}
        (output / STATS_FILE).write_text(json.dumps(stats, indent=2))
