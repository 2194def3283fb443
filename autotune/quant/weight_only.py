"""Weight-only MatMulNBits quantization of a builder fp32 graph with ONNX Runtime's quantizers.

Algorithms: ``rtn`` (ONNX Runtime's default block-wise round-to-nearest, on :data:`MLAS_GRID`), ``k_quant``
(its bundled neural-compressor k-quant) and ``gptq`` (:mod:`autotune.quant.gptq`, on :data:`MLAS_GRID` too:
ONNX Runtime's own GPTQ does not compensate, see there; its HQQ is withdrawn, see :mod:`autotune.passes.onnx_hqq_quantization`).
Nodes in ``exclude`` stay float here; :func:`quantize_8bit` can take them to 8 bits. :func:`tie_embedding` then
lets the embedding lookup share the quantized LM head, as the builder does.

ONNX Runtime has two 4-bit round-to-nearest grids, and they differ in the symmetric case:

- :data:`MLAS_GRID`: ``MatMulNBitsQuantizer`` with its default config (MLAS's ``quantize_matmul_4bits``): here
  ``rtn``, GPTQ's group parameters and the sensitivity's :func:`autotune.quant.sensitivity.rtn_dequantized`;
- :data:`NC_RTN_GRID`: ``MatMulNBitsQuantizer`` with ``RTNWeightOnlyQuantConfig`` (the neural-compressor
  ``rtn_quantize``): the ``OnnxBlockWiseRtnQuantization`` pass (:mod:`autotune.passes.onnx_blockwise_rtn_quantization`).

Symmetric (zero point 8), the MLAS grid's scale is the block's signed largest-magnitude value / -8, which
lands exactly on code 0 (steps of max/8); the neural-compressor grid's is 2 * max|w| / 15 (coarser steps;
-max and +max land on codes 0 and 15, at -16/15 and 14/15 of max). Asymmetric, both take (max - min) / 15
with zero point round(-min / scale), the MLAS grid with min <= 0 <= max. tests/quant/test_gptq.py pins both.
A comparison of GPTQ with round-to-nearest says which grid its rounding used.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import numpy as np

ALGORITHMS = ("rtn", "k_quant", "gptq")
# The two round-to-nearest grids (see the module note), by name, for docs, tests and benchmark labels.
MLAS_GRID = "ONNX Runtime's MLAS grid (symmetric scale: the block's signed extreme / -8)"
NC_RTN_GRID = "neural-compressor's RTN grid (symmetric scale: 2 * max|w| / 15)"


def quantize_int4(model: Any, algorithm: str, *, block_size: int, symmetric: bool, accuracy_level: int,
                  exclude: list[str], hessians: dict[str, np.ndarray] | None = None, damp_percent: float = 0.01,
                  weights_dir: Path | None = None, timings: dict[str, float] | None = None,
                  solved: dict[str, Any] | None = None) -> Any:
    """``model`` (ModelProto, weights loaded) with its MatMuls at 4 bits by ``algorithm``; returns a ModelProto.
    ``hessians`` (GPTQ's calibration statistics per MatMul input) are required by ``gptq``, which also takes a
    graph whose weights are still external (in ``weights_dir``) and packs the codes in ``solved`` (MatMul name ->
    GPTQ solution, from the mixed pass's sensitivity) instead of solving those MatMuls again."""
    from onnxruntime.quantization.matmul_nbits_quantizer import KQuantWeightOnlyQuantConfig, MatMulNBitsQuantizer

    if algorithm == "gptq":
        from autotune.quant.gptq import gptq_quantize_graph

        if hessians is None:
            raise ValueError("gptq needs the calibration Hessians")
        return gptq_quantize_graph(model, hessians, block_size=block_size, symmetric=symmetric, damp_percent=damp_percent,
                                   accuracy_level=accuracy_level, exclude=exclude, weights_dir=weights_dir,
                                   timings=timings, solved=solved)
    configs = {"rtn": None, "k_quant": KQuantWeightOnlyQuantConfig()}
    quantizer = MatMulNBitsQuantizer(model, bits=4, block_size=block_size, is_symmetric=symmetric,
                                     accuracy_level=accuracy_level or None, nodes_to_exclude=exclude,
                                     algo_config=configs[algorithm])
    quantizer.process()
    return quantizer.model.model


def quantize_8bit(model: Any, nodes: list[str], *, block_size: int, symmetric: bool, accuracy_level: int) -> Any:
    """``nodes`` (float MatMuls) at 8 bits (MatMulNBits bits=8, block-wise RTN); every other node untouched."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    keep = set(nodes)
    others = [n.name for n in model.graph.node if n.name not in keep]
    quantizer = MatMulNBitsQuantizer(model, bits=8, block_size=block_size, is_symmetric=symmetric,
                                     accuracy_level=accuracy_level or None, nodes_to_exclude=others)
    quantizer.process()
    return quantizer.model.model


def _tied_pair(model: Any) -> tuple[Any, Any] | None:
    """(Gather, Transpose) of a float embedding tied to the LM head's weight (the builder's fp32 shape), or None."""
    producers = {out: node for node in model.graph.node for out in node.output}
    gather = next((n for n in model.graph.node if n.op_type == "Gather" and n.input[1] == "input_ids"), None)
    transpose = producers.get(gather.input[0]) if gather is not None else None
    if gather is None or transpose is None or transpose.op_type != "Transpose":
        return None
    return gather, transpose


def tied_head(model: Any) -> str | None:
    """The float MatMul whose weight a tied embedding shares, or None."""
    pair = _tied_pair(model)
    if pair is None:
        return None
    return next((n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] == pair[1].input[0]), None)


def tie_embedding(model: Any) -> bool:
    """Replace a tied float embedding (``Transpose(lm_head weight) -> Gather``) by a ``GatherBlockQuantized`` over
    the quantized LM head's own blocks, as the builder's int4 build does; drop the fp32 table. False when the LM
    head is not MatMulNBits with integer zero points (then the float table stays)."""
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    pair = _tied_pair(model)
    if pair is None:
        return False
    gather, transpose = pair
    table = transpose.input[0]
    head = next((n for n in graph.node if n.op_type == "MatMulNBits" and n.input[1].startswith(table)), None)
    inits = {t.name: t for t in graph.initializer}
    if head is None or (len(head.input) > 3 and head.input[3] and inits[head.input[3]].data_type != onnx.TensorProto.UINT8):
        return False  # e.g. HQQ's float zero points, which GatherBlockQuantized does not take
    attrs = {a.name: helper.get_attribute_value(a) for a in head.attribute}
    k, n, bits, block = attrs["K"], attrs["N"], attrs["bits"], attrs["block_size"]
    k_blocks = (k + block - 1) // block
    base = gather.name.rsplit("/", 1)[0] or "/embed"
    new_nodes = []

    def as_2d(name: str, cols: int, tag: str) -> str:
        if list(inits[name].dims) == [n, cols]:
            return name
        shape = numpy_helper.from_array(np.array([n, cols], dtype=np.int64), f"{base}/{tag}_shape")
        graph.initializer.append(shape)
        new_nodes.append(helper.make_node("Reshape", [name, shape.name], [f"{base}/{tag}_2d"], name=f"{base}/{tag}_Reshape"))
        return f"{base}/{tag}_2d"

    inputs = [as_2d(head.input[1], k_blocks * block * bits // 8, "weight"), gather.input[1], as_2d(head.input[2], k_blocks, "scales")]
    if len(head.input) > 3 and head.input[3]:
        inputs.append(as_2d(head.input[3], (k_blocks * bits + 7) // 8, "zero_points"))
    padded = k_blocks * block != k
    out = f"{base}/GatherBlockQuantized/output_0" if padded else gather.output[0]
    new_nodes.append(helper.make_node("GatherBlockQuantized", inputs, [out], name=f"{base}/GatherBlockQuantized",
                                      domain="com.microsoft", bits=bits, block_size=block, gather_axis=0, quantize_axis=1))
    if padded:  # the quantized rows are padded to whole blocks: slice the padding off
        limits = [numpy_helper.from_array(np.array([v], dtype=np.int64), f"{base}/slice_{tag}")
                  for tag, v in (("start", 0), ("end", k), ("axis", -1))]
        graph.initializer.extend(limits)
        new_nodes.append(helper.make_node("Slice", [out, *(t.name for t in limits)], [gather.output[0]], name=f"{base}/Slice"))
    nodes = list(graph.node)
    position = next(i for i, node in enumerate(nodes) if node.output[0] == transpose.output[0])
    kept = [node for node in nodes if node.output[0] not in (gather.output[0], transpose.output[0])]
    kept[position:position] = new_nodes  # the new nodes read only initializers and input_ids
    graph.ClearField("node")
    graph.node.extend(kept)
    if not any(table in node.input for node in graph.node):
        graph.initializer.remove(inits[table])
    return True


def graph_precisions(model: Any) -> dict[str, int]:
    """MatMul node (original name) -> bits: 4/8 for MatMulNBits, 32 for a float MatMul with a constant weight."""
    from onnx import helper

    inits = {t.name for t in model.graph.initializer}
    out: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            bits = next(helper.get_attribute_value(a) for a in node.attribute if a.name == "bits")
            out[node.name.removesuffix("_Q4").removesuffix("_Q8")] = int(bits)
        elif node.op_type == "MatMul" and node.input[1] in inits:
            out[node.name] = 32
    return out


def quiet_quantizer() -> contextlib.AbstractContextManager[None]:
    """ONNX Runtime's quantizers log every node at INFO: for the call, only their warnings show
    (:func:`autotune.library_noise.quiet_quantizers`, scoped to their loggers; nothing process-wide)."""
    from autotune.library_noise import quiet_quantizers

    return quiet_quantizers()


class PassCost:
    """Seconds and peak resident memory of a pass. The kernel's peak-RSS mark (VmHWM) is reset at the start
    (``/proc/self/clear_refs``), so a long study's earlier peaks do not count; where that is refused, the
    process peak is reported and marked as such."""

    def __init__(self) -> None:
        self.reset = _reset_peak()
        self.began = time.perf_counter()

    def stats(self) -> dict[str, Any]:
        return {"seconds": round(time.perf_counter() - self.began, 3), "peak_rss_mb": _peak_rss_mb(),
                "peak_rss_scope": "pass" if self.reset else "process"}


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
