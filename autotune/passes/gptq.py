"""GPTQ (Frantar et al. 2022) for the MatMuls of an ONNX graph, written here because the one that runs on
CPU here does not compensate.

ONNX Runtime 1.32's ``onnxruntime.quantization.neural_compressor.gptq`` transposes the reference's layout
(weights [K, N]) but still reads the *column* ``Hinv[i:, i]`` of the upper-triangular inverse-Hessian
factor, which is zero below the diagonal: no error is ever propagated, and its result equals plain
round-to-nearest (checked: same output error to 1e-7). Its driver also runs the full model once per
distinct MatMul input per calibration row (3,872 forward passes for SmolLM2 and 32 rows; > 20 min on 2
cores), and its 4-bit packing re-derives each block's scale from the already-rounded values, which shifts
the symmetric grid (output error +60% on a SmolLM2 layer). GPTQ libraries that run on CPU (gptqmodel,
llm-compressor) are not installed in this project.

This implementation follows the reference algorithm (Cholesky of the damped inverse Hessian, lazy block
updates, group-wise parameters computed from the error-updated weights), collects every Hessian in one
forward pass per calibration row, and packs the integer codes it chose, with their own scales and zero
points, into ONNX Runtime's MatMulNBits layout. Activations come from the float model (the non-sequential
variant). ``actorder`` is not offered: with group-wise scales it needs static groups to stay exact.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from autotune.passes.calibration import input_moments, weight_matmuls


def gptq_codes(weight: np.ndarray, hessian: np.ndarray, *, block_size: int, symmetric: bool, damp_percent: float,
               bits: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GPTQ of ``weight`` [K, N] (y = x @ weight) given E[x x^T] [K, K].

    Returns (codes [K_padded, N] in 0..2^bits-1, scales [n_blocks, N], zero points [n_blocks, N]); a weight
    dequantizes as (code - zero) * scale, block-wise along K (the MatMulNBits convention).
    """
    k, n = weight.shape
    top = 2 ** bits - 1
    n_blocks = (k + block_size - 1) // block_size
    w = weight.astype(np.float32)  # float32 updates (as the reference): half the memory traffic of float64
    h = hessian.astype(np.float64).copy()
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    w[dead, :] = 0.0  # an input that is always zero carries no information
    h[np.diag_indices(k)] += damp_percent * np.mean(np.diag(h))
    hinv = _inverse_cholesky_upper(h).astype(np.float32)
    codes = np.zeros((n_blocks * block_size, n), dtype=np.uint8)
    scales = np.ones((n_blocks, n), dtype=np.float32)
    zeros = np.zeros((n_blocks, n), dtype=np.float32)
    # Lazy-update blocks span whole quantization groups, so a group's parameters see all earlier updates.
    step = max(128 // block_size, 1) * block_size
    for i1 in range(0, k, step):
        i2 = min(i1 + step, k)
        w1 = w[i1:i2].copy()
        err = np.zeros_like(w1)
        for i in range(i2 - i1):
            row = i1 + i
            if row % block_size == 0:
                group = row // block_size
                scales[group], zeros[group] = _group_params(w1[i:i + block_size], symmetric, top)
            s, z = scales[row // block_size], zeros[row // block_size]
            q = np.clip(np.round(w1[i] / s) + z, 0, top)
            codes[row] = q
            e = (w1[i] - (q - z) * s) / hinv[row, row]
            w1[i:] -= np.outer(hinv[row, row:i2], e)  # the row of U, not its (zero) column
            err[i] = e
        w[i2:] -= hinv[i1:i2, i2:].T @ err
    codes[k:] = zeros[-1].astype(np.uint8)  # padding dequantizes to 0
    return codes, scales, zeros


def _inverse_cholesky_upper(h: np.ndarray) -> np.ndarray:
    """U upper-triangular with H^-1 = U^T U. One torch thread: on a busy machine, multi-threaded LAPACK
    spent 15x longer on a 1536x1536 factorisation than a single thread (oversubscribed cores)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        lower = torch.linalg.cholesky(torch.from_numpy(h))
        return torch.linalg.cholesky(torch.cholesky_inverse(lower), upper=True).numpy()
    finally:
        torch.set_num_threads(threads)


def _group_params(group: np.ndarray, symmetric: bool, top: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-column (scale, zero point) of one block of rows, as ONNX Runtime's RTN chooses them."""
    if symmetric:  # the largest-magnitude value maps exactly to code 0 (-8 * scale); zero point 8
        idx = np.abs(group).argmax(axis=0)
        extreme = group[idx, np.arange(group.shape[1])]
        scale = extreme / -((top + 1) / 2)
        scale[scale == 0] = 1.0
        return scale, np.full(group.shape[1], (top + 1) / 2)
    low, high = np.minimum(group.min(axis=0), 0), np.maximum(group.max(axis=0), 0)
    scale = (high - low) / top
    scale[scale == 0] = 1.0
    return scale, np.clip(np.round(-low / scale), 0, top)


def pack_matmul_nbits(node: Any, codes: np.ndarray, scales: np.ndarray, zeros: np.ndarray, *, k: int, block_size: int,
                      symmetric: bool, accuracy_level: int) -> tuple[Any, list[Any]]:
    """A MatMulNBits node (4 bits) replacing MatMul ``node``, and its initializers."""
    from onnx import helper, numpy_helper

    n = codes.shape[1]
    n_blocks = scales.shape[0]
    per_row = codes.T.reshape(n, n_blocks, block_size)
    packed = (per_row[:, :, 0::2] | (per_row[:, :, 1::2] << 4)).astype(np.uint8)
    weight = node.input[1]
    inits = [numpy_helper.from_array(packed, f"{weight}_Q4"),
             numpy_helper.from_array(scales.T.astype(np.float32).copy(), f"{weight}_scales")]
    inputs = [node.input[0], inits[0].name, inits[1].name]
    if not symmetric:
        zp = np.full((n, (n_blocks + 1) // 2 * 2), 0, dtype=np.uint8)
        zp[:, :n_blocks] = zeros.T.astype(np.uint8)
        inits.append(numpy_helper.from_array((zp[:, 0::2] | (zp[:, 1::2] << 4)).astype(np.uint8), f"{weight}_zero_points"))
        inputs.append(inits[-1].name)
    attrs: dict[str, Any] = {"K": k, "N": n, "bits": 4, "block_size": block_size}
    if accuracy_level:
        attrs["accuracy_level"] = accuracy_level
    new = helper.make_node("MatMulNBits", inputs, list(node.output), name=f"{node.name}_Q4", domain="com.microsoft", **attrs)
    return new, inits


def gptq_quantize_graph(model: Any, feeds: list[dict[str, np.ndarray]], *, block_size: int, symmetric: bool,
                        damp_percent: float, accuracy_level: int, exclude: list[str]) -> Any:
    """Every float MatMul with a constant 2-D weight of ``model`` (not in ``exclude``) to GPTQ int4, in place."""
    from onnx import helper, numpy_helper

    matmuls = {name: io for name, io in weight_matmuls(model).items() if name not in set(exclude)}
    hessians = input_moments(model, feeds, sorted({act for act, _ in matmuls.values()}), full=True)
    inits = {t.name: t for t in model.graph.initializer}
    replaced: dict[str, Any] = {}
    added: list[Any] = []
    for node in model.graph.node:
        if node.name not in matmuls:
            continue
        act, weight_name = matmuls[node.name]
        weight = numpy_helper.to_array(inits[weight_name])
        codes, scales, zeros = gptq_codes(weight, hessians[act], block_size=block_size, symmetric=symmetric,
                                          damp_percent=damp_percent)
        replaced[node.name], new_inits = pack_matmul_nbits(node, codes, scales, zeros, k=weight.shape[0], block_size=block_size,
                                                           symmetric=symmetric, accuracy_level=accuracy_level)
        added += new_inits
    nodes = [replaced.get(node.name, node) for node in model.graph.node]
    model.graph.ClearField("node")
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(added)
    used = {i for node in model.graph.node for i in node.input}
    for weight_name in {w for _, w in matmuls.values()} - used:
        model.graph.initializer.remove(inits[weight_name])
    if not any(op.domain == "com.microsoft" for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model
