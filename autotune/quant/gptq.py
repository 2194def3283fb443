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
updates of 128 rows as matrix products, group-wise parameters computed from the error-updated weights) in
torch, so every update but the rank-1 step inside one quantization group is a BLAS product. Hessians are
accumulated while the calibration rows stream through one forward pass each
(:func:`autotune.quant.calibration.input_hessians`); MatMuls that read the same input (the builder's fused
q/k/v, gate/up) share one. It packs the integer codes it chose, with their own scales and zero points, into
ONNX Runtime's MatMulNBits layout. Its grid is ONNX Runtime's MLAS grid (symmetric: scale = the block's signed
largest-magnitude value / -8; see :data:`autotune.quant.weight_only.MLAS_GRID`), so GPTQ against round-to-nearest
on that grid (``quantize_int4(..., "rtn")``) compares the error compensation alone (``OnnxBlockWiseRtnQuantization``
rounds on neural-compressor's coarser grid). Activations come from the float model (the non-sequential
variant). ``actorder`` is not offered: with group-wise scales it needs static groups to stay exact.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from autotune.quant.calibration import free_cores, weight_matmuls

# One weight's GPTQ result: (codes [K_padded, N], scales [n_blocks, N], zero points [n_blocks, N]).
GptqSolution = tuple[np.ndarray, np.ndarray, np.ndarray]

# Rows updated together between two BLAS updates of the rest (the reference's lazy batch).
LAZY_ROWS = 128
# MatMuls of one weight shape are solved together as a batch of up to this many bytes (weights, Hessians and
# their factors): the row-by-row steps are then one small kernel call for the batch instead of one per MatMul.
BATCH_BYTES = 128 * 2 ** 20


def gptq_codes(weight: np.ndarray, hessian: np.ndarray, *, block_size: int, symmetric: bool, damp_percent: float,
               bits: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GPTQ of ``weight`` [K, N] (y = x @ weight) given E[x x^T] [K, K].

    Returns (codes [K_padded, N] in 0..2^bits-1, scales [n_blocks, N], zero points [n_blocks, N]); a weight
    dequantizes as (code - zero) * scale, block-wise along K (the MatMulNBits convention).
    """
    codes, scales, zeros = gptq_codes_batch([weight], [hessian], block_size=block_size, symmetric=symmetric,
                                            damp_percent=damp_percent, bits=bits)
    return codes[0], scales[0], zeros[0]


def gptq_codes_batch(weights: list[np.ndarray], hessians: list[np.ndarray], *, block_size: int, symmetric: bool,
                     damp_percent: float, bits: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`gptq_codes` of several weights of one shape [K, N], each with its own Hessian; results stacked."""
    import torch

    k, n = weights[0].shape
    top = 2 ** bits - 1
    n_blocks = (k + block_size - 1) // block_size
    batch = len(weights)
    # float32 throughout, as the reference
    w = torch.from_numpy(np.stack([np.asarray(x, dtype=np.float32) for x in weights]))
    h = torch.from_numpy(np.stack([np.asarray(x, dtype=np.float32) for x in hessians]))
    for b in range(batch):
        dead = torch.diagonal(h[b]) == 0
        h[b, dead, dead] = 1.0
        w[b, dead, :] = 0.0  # an input that is always zero carries no information
    hinv = _inverse_cholesky_upper(h, damp_percent)
    del h
    diag = torch.diagonal(hinv, dim1=1, dim2=2).unsqueeze(2)  # [B, K, 1]
    codes = torch.zeros((batch, n_blocks * block_size, n), dtype=torch.uint8)
    scales = torch.ones((batch, n_blocks, n), dtype=torch.float32)
    zeros = torch.zeros((batch, n_blocks, n), dtype=torch.float32)
    # Lazy blocks span whole quantization groups, and inside a block each group is finished (rank-1 updates of
    # its own rows only) before one product updates the block's later rows: a group's parameters are computed
    # after every earlier row's update, as in the row-by-row reference.
    step = max(LAZY_ROWS // block_size, 1) * block_size
    err = torch.empty((batch, step, n), dtype=torch.float32)
    for i1 in range(0, k, step):
        i2 = min(i1 + step, k)
        for g1 in range(i1, i2, block_size):
            g2 = min(g1 + block_size, i2)
            group = g1 // block_size
            s, z = _group_params(w[:, g1:g2], symmetric, top)
            scales[:, group], zeros[:, group] = s, z
            for row in range(g1, g2):
                q = torch.clamp(torch.round(w[:, row] / s) + z, 0, top)
                codes[:, row] = q.to(torch.uint8)
                e = (w[:, row] - (q - z) * s) / diag[:, row]
                if row + 1 < g2:  # the row of U, not its (zero) column
                    w[:, row + 1:g2].baddbmm_(hinv[:, row, row + 1:g2].unsqueeze(2), e.unsqueeze(1), alpha=-1.0)
                err[:, row - i1] = e
            if g2 < i2:
                w[:, g2:i2].baddbmm_(hinv[:, g1:g2, g2:i2].transpose(1, 2), err[:, g1 - i1:g2 - i1], alpha=-1.0)
        if i2 < k:
            w[:, i2:].baddbmm_(hinv[:, i1:i2, i2:].transpose(1, 2), err[:, :i2 - i1], alpha=-1.0)
    codes[:, k:] = zeros[:, -1:].to(torch.uint8)  # padding dequantizes to 0
    return codes.numpy(), scales.numpy(), zeros.numpy()


def _inverse_cholesky_upper(h: Any, damp_percent: float) -> Any:
    """U upper-triangular with (H + damping)^-1 = U^T U (float32), for a batch H [B, K, K], one matrix at a
    time (a batch's temporaries would be several copies of all its Hessians), factorised in float64 (in
    float32 SmolLM2's output KL to fp32 was 2% higher).

    One Cholesky and one triangular inverse: with J the order reversal, J H J = L L^T gives H = (J L J)(J L J)^T
    with J L J upper, so U = (J L J)^-1 = J L^-1 J is upper with U^T U = H^-1 (the reference's
    cholesky -> cholesky_inverse -> cholesky, at a third of the work). The damping grows tenfold for a
    Hessian that is not positive definite (rounding can leave a rank-deficient one slightly indefinite)."""
    import torch

    k = h.shape[-1]
    eye = torch.eye(k, dtype=torch.float64)
    out = torch.empty_like(h)
    for b in range(h.shape[0]):
        one = h[b].to(torch.float64)
        mean = float(torch.diagonal(one).mean())
        damp = damp_percent
        for _ in range(6):
            lower, info = torch.linalg.cholesky_ex(torch.flip(one + damp * mean * eye, dims=(0, 1)))
            if int(info) == 0:
                break
            damp *= 10
        else:
            raise ValueError("a calibration Hessian is not positive definite even with 10^5 times the damping")
        out[b] = torch.flip(torch.linalg.solve_triangular(lower, eye, upper=False), dims=(0, 1))
    return out


def _group_params(group: Any, symmetric: bool, top: int) -> tuple[Any, Any]:
    """Per-column (scale, zero point) of one block of rows (torch [B, rows, N] -> [B, N] each) on ONNX Runtime's
    MLAS grid (:data:`autotune.quant.weight_only.MLAS_GRID`: the grid of ``MatMulNBitsQuantizer``'s default
    config, the mixed pass's ``rtn`` and :func:`autotune.quant.sensitivity.rtn_dequantized`), not the
    neural-compressor grid of ``OnnxBlockWiseRtnQuantization`` (:data:`autotune.quant.weight_only.NC_RTN_GRID`)."""
    import torch

    if symmetric:  # the largest-magnitude value maps exactly to code 0 (-8 * scale); zero point 8
        idx = group.abs().argmax(dim=1, keepdim=True)
        scale = group.gather(1, idx)[:, 0] / -((top + 1) / 2)
        scale[scale == 0] = 1.0
        return scale, torch.full_like(scale, (top + 1) / 2)
    low = torch.clamp(group.amin(dim=1), max=0)
    high = torch.clamp(group.amax(dim=1), min=0)
    scale = (high - low) / top
    scale[scale == 0] = 1.0
    return scale, torch.clamp(torch.round(-low / scale), 0, top)


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


def gptq_quantize_graph(model: Any, hessians: dict[str, np.ndarray], *, block_size: int, symmetric: bool,
                        damp_percent: float, accuracy_level: int, exclude: list[str], weights_dir: Path | None = None,
                        timings: dict[str, float] | None = None, solved: dict[str, GptqSolution] | None = None) -> Any:
    """Every float MatMul with a constant 2-D weight of ``model`` (not in ``exclude``) to GPTQ int4, in place.
    ``hessians``: input tensor name -> E[x x^T] (:func:`autotune.quant.calibration.input_hessians`); each is
    dropped from the dict once its MatMuls are done, to bound memory. Weights still in external data are read
    from ``weights_dir`` one batch at a time (the float weights are then never all in memory). ``solved``: MatMul
    name -> its solution from the same weights, Hessians and settings (the mixed pass's sensitivity solves GPTQ
    for its scores): packed as is, not solved again, and dropped from the dict once packed. ``timings`` gains
    the seconds of the solves and of the packing."""
    from onnx import helper

    matmuls = {name: io for name, io in weight_matmuls(model).items() if name not in set(exclude)}
    missing = sorted({act for act, _ in matmuls.values()} - set(hessians))
    if missing:
        raise ValueError(f"no calibration Hessian for the MatMul inputs {missing[:3]}")
    inits = {t.name: t for t in model.graph.initializer}
    nodes = {node.name: node for node in model.graph.node if node.name in matmuls}
    readers: dict[str, int] = {}
    for act, _ in matmuls.values():
        readers[act] = readers.get(act, 0) + 1
    replaced: dict[str, Any] = {}
    added: list[Any] = []
    given = solved if solved is not None else {}
    solve = pack = 0.0
    dims = {t.name: tuple(t.dims) for t in model.graph.initializer}
    with _torch_threads(free_cores()):
        for batch in shape_batches(matmuls, dims):
            began = time.perf_counter()
            results = {name: given.pop(name) for name in batch if name in given}
            todo = [name for name in batch if name not in results]
            if todo:
                weights = [_weight(inits[matmuls[name][1]], weights_dir) for name in todo]
                codes, scales, zeros = gptq_codes_batch(weights, [hessians[matmuls[name][0]] for name in todo], block_size=block_size,
                                                        symmetric=symmetric, damp_percent=damp_percent)
                del weights
                results.update({name: (codes[i], scales[i], zeros[i]) for i, name in enumerate(todo)})
            k = dims[matmuls[batch[0]][1]][0]
            for name in batch:
                act = matmuls[name][0]
                readers[act] -= 1
                if not readers[act]:
                    del hessians[act]
            solve += time.perf_counter() - began
            began = time.perf_counter()
            for name in batch:
                replaced[name], new_inits = pack_matmul_nbits(nodes[name], *results.pop(name), k=k, block_size=block_size,
                                                              symmetric=symmetric, accuracy_level=accuracy_level)
                added += new_inits
            pack += time.perf_counter() - began
    all_nodes = [replaced.get(node.name, node) for node in model.graph.node]
    model.graph.ClearField("node")
    model.graph.node.extend(all_nodes)
    model.graph.initializer.extend(added)
    used = {i for node in model.graph.node for i in node.input}
    for weight_name in {w for _, w in matmuls.values()} - used:
        model.graph.initializer.remove(inits[weight_name])
    if not any(op.domain == "com.microsoft" for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    if timings is not None:
        timings["gptq_solve"] = timings.get("gptq_solve", 0.0) + solve
        timings["packing"] = timings.get("packing", 0.0) + pack
    return model


def _weight(tensor: Any, weights_dir: Path | None) -> np.ndarray:
    """An initializer's array, read from its external data file when it has one, without loading the data into
    the tensor (onnx's ``to_array`` would, and every float weight would then stay in the graph)."""
    import onnx
    from onnx import numpy_helper

    if tensor.data_location != onnx.TensorProto.EXTERNAL:
        return numpy_helper.to_array(tensor)
    if weights_dir is None:
        raise ValueError(f"{tensor.name} is external data but no weights folder was given")
    info = {entry.key: entry.value for entry in tensor.external_data}
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
    shape = tuple(tensor.dims)
    with open(weights_dir / info["location"], "rb") as handle:
        handle.seek(int(info.get("offset", 0)))
        return np.fromfile(handle, dtype=dtype, count=int(np.prod(shape))).reshape(shape)


@contextlib.contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def shape_batches(matmuls: dict[str, tuple[str, str]], dims: dict[str, tuple[int, ...]]) -> list[list[str]]:
    """The MatMul names grouped by weight shape, in batches of at most ``BATCH_BYTES`` of float32 weights and
    Hessians: the batches GPTQ is solved in (the body's and the mixed pass's sensitivity's alike)."""
    by_shape: dict[tuple[int, ...], list[str]] = {}
    for name, (_, weight) in matmuls.items():
        by_shape.setdefault(dims[weight], []).append(name)
    batches: list[list[str]] = []
    for shape, names in by_shape.items():  # a weight, its Hessian and the Hessian's inverse factor, float32
        per_batch = max(1, BATCH_BYTES // (4 * (int(np.prod(shape)) + 2 * shape[0] ** 2)))
        batches += [names[i:i + per_batch] for i in range(0, len(names), per_batch)]
    return batches
