"""Per-MatMul sensitivity to 4-bit quantization, measured on calibration data, and the budgeted choice of
the layers kept at higher precision.

The score of a layer is the relative output error of quantizing that layer alone, with the diagonal of
its input's second moment standing in for the full Hessian (the cheap proxy of GPTQ/HAWQ-style methods):

    score = sum_k E[x_k^2] * sum_n (W - Q(W))_kn^2  /  sum_k E[x_k^2] * sum_n W_kn^2

so a layer whose large-activation input channels carry large rounding errors ranks first, and scores of
layers of different shapes compare (each is a fraction of that layer's own output energy).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np

from autotune.passes.calibration import input_moments, weight_matmuls


def rtn_dequantized(weight: np.ndarray, block_size: int, symmetric: bool, bits: int = 4) -> np.ndarray:
    """``weight`` [K, N] after block-wise (along K) round-to-nearest at ``bits`` and back to float."""
    k, n = weight.shape
    pad = (-k) % block_size
    blocks = np.pad(weight.T, ((0, 0), (0, pad))).reshape(n, -1, block_size).astype(np.float64)
    top = 2 ** bits - 1
    if symmetric:
        scale = np.abs(blocks).max(axis=2, keepdims=True) / (top / 2)
        scale[scale == 0] = 1.0
        codes = np.clip(np.round(blocks / scale), -(top + 1) // 2, top // 2)
        deq = codes * scale
    else:
        low, high = np.minimum(blocks.min(axis=2, keepdims=True), 0), np.maximum(blocks.max(axis=2, keepdims=True), 0)
        scale = (high - low) / top
        scale[scale == 0] = 1.0
        zero = np.round(-low / scale)
        deq = (np.clip(np.round(blocks / scale) + zero, 0, top) - zero) * scale
    return deq.reshape(n, -1)[:, :k].T


def sensitivities(model: Any, feeds: list[dict[str, np.ndarray]], *, block_size: int, symmetric: bool) -> dict[str, float]:
    """MatMul node name -> relative output error of quantizing it alone to 4 bits (see the module note)."""
    from onnx import numpy_helper

    matmuls = weight_matmuls(model)
    moments = input_moments(model, feeds, sorted({act for act, _ in matmuls.values()}))
    inits = {t.name: t for t in model.graph.initializer}
    scores: dict[str, float] = {}
    for node, (act, weight_name) in matmuls.items():
        weight = numpy_helper.to_array(inits[weight_name]).astype(np.float64)
        error = weight - rtn_dequantized(weight, block_size, symmetric)
        energy = moments[act] @ (weight ** 2).sum(axis=1)
        scores[node] = float(moments[act] @ (error ** 2).sum(axis=1) / energy) if energy > 0 else 0.0
    return scores


def weight_sizes(model: Any) -> dict[str, int]:
    """MatMul node name -> number of weights (the byte cost of a layer scales with it)."""
    matmuls = weight_matmuls(model)
    dims = {t.name: list(t.dims) for t in model.graph.initializer}
    return {node: math.prod(dims[w]) for node, (_, w) in matmuls.items()}


def choose(scores: dict[str, float], sizes: dict[str, int], share: float, unit: Literal["layers", "bytes"]) -> list[str]:
    """The most sensitive layers within the budget: ``share`` of the layers, or of the weights (bytes)."""
    ranked = sorted(scores, key=lambda name: (-scores[name], name))
    if share <= 0:
        return []
    if unit == "layers":
        return ranked[:max(1, round(share * len(ranked)))]
    budget, used, chosen = share * sum(sizes.values()), 0, []
    for name in ranked:  # greedy by sensitivity; a layer too large for what is left is skipped
        if used + sizes[name] <= budget:
            chosen.append(name)
            used += sizes[name]
    return chosen
