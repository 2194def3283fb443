"""Per-MatMul sensitivity to 4-bit quantization, measured on calibration data with the int4 body's own
algorithm on ONNX Runtime's grid, and the budgeted choice of the layers kept at higher precision.

The score of a layer is the relative output error of quantizing that layer alone,

    score = tr(E^T H E) / tr(W^T H W),   E = W - Q(W),   H = E[x x^T] of the layer's input,

a fraction of that layer's own output energy, so scores of layers of different shapes compare. Q is the
body's algorithm, so the layers kept high are those the body would quantize worst:

- ``rtn``: ONNX Runtime's round-to-nearest grid (:func:`rtn_dequantized`, the quantizer's exact codes), with
  H's diagonal E[x_k^2] (RTN rounds each weight alone, so off-diagonal terms only add noise of either sign);
- ``gptq``: GPTQ's own result (:func:`autotune.quant.gptq.gptq_codes_batch`) and the full Hessian, the
  quantity GPTQ minimises. The solve is the body's (same batches, :func:`autotune.quant.gptq.shape_batches`),
  and it is solved once: the scorer hands each layer's codes to the body (``solved``), which packs those of
  the layers it quantizes instead of solving them again; ``quant_stats.json``'s ``seconds_by_step.sensitivity``
  then holds the solve;
- ``k_quant``: a stated proxy, the asymmetric RTN grid with H's diagonal (running ONNX Runtime's k-quant
  search once more only to score would double its cost, ~56 s on SmolLM2-135M; on the tiny model the
  proxy ranks the layers as k-quant's measured errors do with Spearman 0.87).

tests/quant/test_sensitivity.py checks that the ranking agrees with each layer's output error measured by
quantizing it alone in the ONNX graph and running it in ONNX Runtime on held-out rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from autotune.quant.calibration import free_cores, input_moments, weight_matmuls

if TYPE_CHECKING:
    from autotune.quant.gptq import GptqSolution


def rtn_dequantized(weight: np.ndarray, block_size: int, symmetric: bool, bits: int = 4) -> np.ndarray:
    """``weight`` [K, N] after ONNX Runtime's block-wise (along K) round-to-nearest at ``bits`` (the
    MatMulNBitsQuantizer / MLAS grid) and back to float. Symmetric: the block's largest-magnitude value, with
    its sign, maps exactly to code 0 (scale = value / -2^(bits-1)), zero point 2^(bits-1), codes 0..2^bits-1;
    asymmetric: scale = (max(high, 0) - min(low, 0)) / (2^bits - 1), zero point round(-min / scale).
    tests/quant/test_sensitivity.py checks it against the quantizer's own packed weights."""
    k, n = weight.shape
    pad = (-k) % block_size
    blocks = np.pad(weight.T, ((0, 0), (0, pad))).reshape(n, -1, block_size).astype(np.float64)
    top = 2 ** bits - 1
    if symmetric:
        index = np.abs(blocks).argmax(axis=2)[..., None]
        scale = np.take_along_axis(blocks, index, axis=2) / -((top + 1) / 2)
        zero = np.full_like(scale, (top + 1) / 2)
    else:
        low, high = np.minimum(blocks.min(axis=2, keepdims=True), 0), np.maximum(blocks.max(axis=2, keepdims=True), 0)
        scale = (high - low) / top
        scale[scale == 0] = 1.0
        zero = np.clip(np.round(-low / scale), 0, top)
    scale[scale == 0] = 1.0
    deq = (np.clip(np.round(blocks / scale) + zero, 0, top) - zero) * scale
    return deq.reshape(n, -1)[:, :k].T


def sensitivities(model: Any, feeds: list[dict[str, np.ndarray]], *, algorithm: str, block_size: int, symmetric: bool,
                  hessians: dict[str, np.ndarray] | None = None, damp_percent: float = 0.01,
                  exclude: frozenset[str] = frozenset(), solved: dict[str, GptqSolution] | None = None) -> dict[str, float]:
    """MatMul node name -> relative output error of quantizing it alone to 4 bits by ``algorithm`` (see the
    module note). ``gptq`` reads ``hessians`` (input tensor name -> E[x x^T], as the body uses them) and fills
    ``solved``, when given, with each node's GPTQ solution for the body to pack; the others measure the input's
    diagonal second moment on ``feeds``."""
    from onnx import numpy_helper

    matmuls = {name: io for name, io in weight_matmuls(model).items() if name not in exclude}
    inits = {t.name: t for t in model.graph.initializer}

    def weight(node: str) -> np.ndarray:  # one at a time: all of them in float64 would be 8 bytes a weight
        return numpy_helper.to_array(inits[matmuls[node][1]]).astype(np.float64)

    if algorithm == "gptq":
        if hessians is None:
            raise ValueError("the gptq sensitivity needs the calibration Hessians")
        # the weights as stored (float32): GPTQ solves in float32, and a batch of float64 copies would double its memory
        return _gptq_scores(matmuls, {t.name: tuple(t.dims) for t in model.graph.initializer},
                            lambda node: numpy_helper.to_array(inits[matmuls[node][1]]),
                            {node: hessians[act] for node, (act, _) in matmuls.items()}, block_size=block_size,
                            symmetric=symmetric, damp_percent=damp_percent, solved=solved)
    moments = input_moments(model, feeds, sorted({act for act, _ in matmuls.values()}))
    grid_symmetric = symmetric and algorithm == "rtn"  # k-quant's grid is asymmetric
    scores: dict[str, float] = {}
    for node, (act, _) in matmuls.items():
        w = weight(node)
        error = w - rtn_dequantized(w, block_size, grid_symmetric)
        energy = moments[act] @ (w ** 2).sum(axis=1)
        scores[node] = float(moments[act] @ (error ** 2).sum(axis=1) / energy) if energy > 0 else 0.0
    return scores


def _gptq_scores(matmuls: dict[str, tuple[str, str]], dims: dict[str, tuple[int, ...]], weight: Callable[[str], np.ndarray],
                 hessians: dict[str, np.ndarray], *, block_size: int, symmetric: bool, damp_percent: float,
                 solved: dict[str, GptqSolution] | None) -> dict[str, float]:
    """tr(E^T H E) / tr(W^T H W) with E the GPTQ error of each weight, solved in the body's batches and on its
    threads, so that the body can pack these very codes."""
    import torch
    from threadpoolctl import threadpool_limits

    from autotune.quant.gptq import gptq_codes_batch, shape_batches

    # the body's thread policy (free_cores): on a busy shared machine a full pool runs several times slower
    threads, previous = free_cores(), torch.get_num_threads()
    torch.set_num_threads(threads)
    scores: dict[str, float] = {}
    try:
        with threadpool_limits(limits=threads):
            for batch in shape_batches(matmuls, dims):
                k = dims[matmuls[batch[0]][1]][0]
                weights = [weight(n) for n in batch]
                codes, scales, zeros = gptq_codes_batch(weights, [hessians[n] for n in batch], block_size=block_size,
                                                        symmetric=symmetric, damp_percent=damp_percent)
                for index, node in enumerate(batch):
                    if solved is not None:
                        solved[node] = (codes[index], scales[index], zeros[index])
                    deq = (codes[index].astype(np.float64) - np.repeat(zeros[index], block_size, axis=0)) * \
                        np.repeat(scales[index], block_size, axis=0)
                    # tr(W^T H W) as BLAS products, in float32 (float64 takes twice as long)
                    w, hessian = weights[index].astype(np.float32), hessians[node].astype(np.float32, copy=False)
                    error = w - deq[:k].astype(np.float32)
                    energy = float(((hessian @ w) * w).sum(dtype=np.float64))
                    scores[node] = float(((hessian @ error) * error).sum(dtype=np.float64)) / energy if energy > 0 else 0.0
    finally:
        torch.set_num_threads(previous)
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
