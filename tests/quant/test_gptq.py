"""Issue 21: GPTQ proven end to end. On a tiny model whose activations are correlated (as a trained model's
are), GPTQ's output error is well below round-to-nearest's on the same grid on held-out rows; each MatMul's
Hessian is the second moment of that MatMul's own input; the blocked, batched solve gives the row-by-row
reference's codes. Issue 28 item 16: which round-to-nearest grid is which (GPTQ and the mixed pass's ``rtn``:
ONNX Runtime's MLAS grid; ``OnnxBlockWiseRtnQuantization``: neural-compressor's), pinned against ONNX Runtime."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from autotune.testing import held_out_logprobs, make_tiny_llama
from tests.passes.test_int4_support import TONES, dataset, fp32_build, run_pass

HELD_OUT = 40  # held-out rows (templated prompt + answer, every position) the output error is measured on


def correlated_tiny_model(folder: Path, *, seed: int = 0, rank: int = 8) -> Path:
    """The tests' tiny Llama (tied, linear weights scaled 3x) with an embedding of rank ``rank`` plus a little
    noise: the residual stream, and so every MatMul input, is strongly correlated across channels, which is
    what GPTQ exploits in a trained model. With isotropic random activations GPTQ's gain over RTN is small
    (KL ratio 0.54-0.66 on seeds 0-2 here) and the comparison says little."""
    import torch
    from transformers import LlamaForCausalLM

    rows = [json.loads(line) for line in TONES.read_text().splitlines() if line.strip()]
    make_tiny_llama(folder, [r["phrase"] for r in rows], seed=seed, tie_word_embeddings=True)
    model = LlamaForCausalLM.from_pretrained(str(folder))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() == 2 and "embed" not in name:
                param.mul_(3.0)
        table = model.model.embed_tokens.weight
        low = torch.randn(table.shape[0], rank, generator=generator) @ torch.randn(rank, table.shape[1], generator=generator)
        table.copy_(0.2 * low / rank ** 0.5 + 0.02 * torch.randn(table.shape, generator=generator))
    model.save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("gptq")
    model = correlated_tiny_model(root / "model")
    return {"root": root, "model": model, "fp32": fp32_build(model, root / "fp32"), "data": dataset(model, root)}


def kl_to(reference: np.ndarray, candidate: np.ndarray) -> float:
    return float((np.exp(reference) * (reference - candidate)).sum(axis=1).mean())


def rtn_on_the_mlas_grid(fp32: Path, out: Path, *, block_size: int) -> Path:
    """``fp32`` rounded to 4 bits on GPTQ's own grid (ONNX Runtime's MLAS grid: the mixed pass's ``rtn`` body,
    :func:`autotune.quant.weight_only.quantize_int4`), tied embedding and companions as the passes write them."""
    import onnx

    from autotune.builder.onnx_folder import copy_companions, save_with_external_data
    from autotune.quant.weight_only import quantize_int4, quiet_quantizer, tie_embedding

    out.mkdir(parents=True, exist_ok=True)
    with quiet_quantizer():
        graph = quantize_int4(onnx.load(str(fp32 / "model.onnx")), "rtn", block_size=block_size, symmetric=True,
                              accuracy_level=0, exclude=[])
    tie_embedding(graph)
    save_with_external_data(graph, out)
    copy_companions(fp32, out)
    return out


def test_gptq_output_error_is_well_below_round_to_nearest_on_the_same_grid(setup: dict[str, Any]) -> None:
    # GPTQ against RTN on GPTQ's own grid (MLAS): the gain is the error compensation alone. Measured here (KL GPTQ /
    # RTN, 64 calibration rows, block 32, symmetric): 0.55, 0.40, 0.53 on seeds 0, 1, 2. Against the
    # OnnxBlockWiseRtnQuantization pass (neural-compressor's coarser grid: its KL is 1.1-1.7x the MLAS grid's
    # here) the ratios were 0.33, 0.36, 0.39: that compared grids as well as algorithms.
    reference = np.concatenate(held_out_logprobs(setup["fp32"], setup["data"], rows=HELD_OUT))
    rtn = rtn_on_the_mlas_grid(setup["fp32"], setup["root"] / "rtn-mlas", block_size=32)
    gptq = run_pass("OnnxGptqQuantization", {"block_size": 32, "calibration_rows": 64}, setup["fp32"], setup["root"] / "gptq",
                    setup["data"])
    errors = {name: kl_to(reference, np.concatenate(held_out_logprobs(out, setup["data"], rows=HELD_OUT)))
              for name, out in (("rtn", rtn), ("gptq", gptq))}
    assert errors["rtn"] > 0.01, errors  # RTN visibly hurts, so the ratio measures something
    assert errors["gptq"] < 0.65 * errors["rtn"], errors


def hf_module_name(node: str) -> str:
    """The HF Linear whose input an ONNX builder MatMul reads (the fused q/k/v reads q_proj's input)."""
    if node == "/lm_head/MatMul":
        return "lm_head"
    layer, block, proj = re.fullmatch(r"/model/layers\.(\d+)/(attn|mlp)/(\w+)_proj/MatMul", node).groups()  # type: ignore[union-attr]
    return f"model.layers.{layer}.{'self_attn' if block == 'attn' else 'mlp'}.{'q' if proj == 'qkv' else proj}_proj"


def test_each_matmul_hessian_is_the_second_moment_of_its_own_input(setup: dict[str, Any]) -> None:
    import onnx
    import torch
    from transformers import LlamaForCausalLM

    from autotune.quant.calibration import calibration_feeds, input_hessians, weight_matmuls

    fp32 = setup["fp32"]
    graph = onnx.load(str(fp32 / "model.onnx"), load_external_data=False)
    feeds = calibration_feeds(fp32, graph, setup["data"], 6)
    matmuls = weight_matmuls(graph)
    hessians = input_hessians(fp32 / "model.onnx", feeds, sorted({act for act, _ in matmuls.values()}))

    # The same rows through the HF model, each Linear's input captured by a forward pre-hook.
    model = LlamaForCausalLM.from_pretrained(str(setup["model"])).eval()
    captured: dict[str, list[np.ndarray]] = {}
    modules = dict(model.named_modules())

    def hook(name: str) -> Any:
        def capture(_module: Any, args: tuple[Any, ...]) -> None:
            captured.setdefault(name, []).append(args[0].detach().reshape(-1, args[0].shape[-1]).double().numpy())
        return capture

    for name in {hf_module_name(node) for node in matmuls}:
        modules[name].register_forward_pre_hook(hook(name))
    with torch.no_grad():
        for feed in feeds:
            model(input_ids=torch.from_numpy(feed["input_ids"]).long())
    assert len(matmuls) == 11 and len(hessians) == 9  # per layer 4 inputs (gate/up share one), and the LM head's
    expected = {}
    for node, (act, _) in matmuls.items():
        x = np.concatenate(captured[hf_module_name(node)])
        expected[node] = x.T @ x / len(x)
        relative = np.linalg.norm(hessians[act] - expected[node]) / np.linalg.norm(expected[node])
        assert relative < 1e-3, (node, relative)
    # Distinct inputs have distinct Hessians here, so a Hessian taken from another MatMul's input would fail.
    qkv, o = expected["/model/layers.0/attn/qkv_proj/MatMul"], expected["/model/layers.0/attn/o_proj/MatMul"]
    assert np.linalg.norm(qkv - o) / np.linalg.norm(qkv) > 0.1


def reference_gptq(weight: np.ndarray, hessian: np.ndarray, *, block_size: int, symmetric: bool,
                   damp_percent: float) -> np.ndarray:
    """Textbook GPTQ, row by row in float64 (no lazy batches): the dequantized weight."""
    k, n = weight.shape
    w = weight.astype(np.float64).copy()
    h = hessian.astype(np.float64) + damp_percent * np.mean(np.diag(hessian)) * np.eye(k)
    u = np.linalg.cholesky(np.linalg.inv(h)).T
    out = np.zeros_like(w)
    for row in range(k):
        if row % block_size == 0:
            group = w[row:row + block_size]
            if symmetric:
                extreme = group[np.abs(group).argmax(axis=0), np.arange(n)]
                scale, zero = extreme / -8.0, np.full(n, 8.0)
            else:
                low, high = np.minimum(group.min(axis=0), 0), np.maximum(group.max(axis=0), 0)
                scale = (high - low) / 15
                zero = np.clip(np.round(-low / np.where(scale == 0, 1, scale)), 0, 15)
            scale = np.where(scale == 0, 1.0, scale)
        q = np.clip(np.round(w[row] / scale) + zero, 0, 15)
        out[row] = (q - zero) * scale
        err = (w[row] - out[row]) / u[row, row]
        w[row:] -= np.outer(u[row, row:], err)
    return out


def test_the_blocked_batched_solve_matches_the_row_by_row_reference() -> None:
    from autotune.quant.gptq import gptq_codes_batch

    rng = np.random.default_rng(0)
    k, n, block = 200, 24, 32  # not a whole number of blocks, and more than one 128-row lazy batch
    weights = [rng.standard_normal((k, n)) for _ in range(2)]
    hessians = []
    for _ in range(2):
        x = rng.standard_normal((600, k)) @ rng.standard_normal((k, k))  # correlated channels
        hessians.append(x.T @ x / len(x))
    for symmetric in (True, False):
        codes, scales, zeros = gptq_codes_batch(weights, hessians, block_size=block, symmetric=symmetric, damp_percent=0.01)
        for b in range(2):
            deq = ((codes[b].astype(np.float64) - np.repeat(zeros[b], block, axis=0)) * np.repeat(scales[b], block, axis=0))[:k]
            ref = reference_gptq(weights[b], hessians[b], block_size=block, symmetric=symmetric, damp_percent=0.01)

            def error(approx: np.ndarray, b: int = b) -> float:
                delta = weights[b] - approx
                return float(np.trace(delta.T @ hessians[b] @ delta))

            assert np.isclose(deq, ref, rtol=0, atol=1e-3 * np.abs(ref).max()).mean() > 0.98
            assert error(deq) <= 1.02 * error(ref)
            assert codes[b, k:].astype(int).tolist() == np.repeat(zeros[b, -1:], codes.shape[1] - k, axis=0).astype(int).tolist()


def matmul_folder(weight: np.ndarray, folder: Path) -> Path:
    """A one-MatMul ONNX folder (y = x @ weight), as the int4 passes read an fp32 build."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    k, n = weight.shape
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "one",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
                              [numpy_helper.from_array(weight, "w")])
    folder.mkdir(parents=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(folder / "model.onnx"))
    return folder


def dequantized(folder: Path, k: int, n: int, block: int) -> np.ndarray:
    """The MatMulNBits weight of a one-MatMul folder, unpacked to float [K, N] (an even number of blocks: the
    two packers' zero-point layouts then agree)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(folder / "model.onnx"))
    node = next(x for x in model.graph.node if x.op_type == "MatMulNBits")
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    scales = inits[node.input[2]].reshape(n, -1).astype(np.float64)
    blocks = scales.shape[1]
    packed = inits[node.input[1]].reshape(n, blocks, block // 2)
    codes = np.stack([packed & 15, packed >> 4], axis=-1).reshape(n, blocks, block).astype(np.float64)
    zeros = np.full((n, blocks), 8.0)
    if len(node.input) > 3 and node.input[3]:
        zp = inits[node.input[3]].reshape(n, -1)
        zeros = np.stack([zp & 15, zp >> 4], axis=-1).reshape(n, -1)[:, :blocks].astype(np.float64)
    return ((codes - zeros[:, :, None]) * scales[:, :, None]).reshape(n, -1)[:, :k].T


@pytest.mark.parametrize("symmetric", [True, False])
def test_gptq_rounds_on_the_mlas_grid_and_the_rtn_pass_on_neural_compressors(symmetric: bool, tmp_path: Path) -> None:
    """Which grid is which, from ONNX Runtime itself: GPTQ with nothing to compensate (H = I) is round-to-nearest on
    MLAS's grid (MatMulNBitsQuantizer's default config, the mixed pass's ``rtn``); ``OnnxBlockWiseRtnQuantization``
    rounds on neural-compressor's (symmetric scale 2 max|w| / 15). Symmetric, the two differ."""
    import onnx

    from autotune.quant.gptq import gptq_codes
    from autotune.quant.weight_only import quantize_int4

    k, n, block = 128, 24, 32  # an even number of blocks: neural-compressor's asymmetric packing fails on an odd one
    weight = np.random.default_rng(0).standard_normal((k, n)).astype(np.float32)
    fp32 = matmul_folder(weight, tmp_path / "fp32")
    (tmp_path / "mlas").mkdir()
    onnx.save(quantize_int4(onnx.load(str(fp32 / "model.onnx")), "rtn", block_size=block, symmetric=symmetric, accuracy_level=0,
                            exclude=[]), str(tmp_path / "mlas" / "model.onnx"))
    mlas = dequantized(tmp_path / "mlas", k, n, block)
    nc = dequantized(run_pass("OnnxBlockWiseRtnQuantization", {"block_size": block, "is_symmetric": symmetric},
                              fp32, tmp_path / "nc", None), k, n, block)
    codes, scales, zeros = gptq_codes(weight, np.eye(k), block_size=block, symmetric=symmetric, damp_percent=0.01)
    gptq = ((codes.astype(np.float64) - np.repeat(zeros, block, axis=0)) * np.repeat(scales, block, axis=0))[:k]
    np.testing.assert_allclose(gptq, mlas, rtol=0, atol=1e-6)  # GPTQ's grid is MLAS's

    blocks = weight.T.reshape(n, k // block, block).astype(np.float64)  # neural-compressor's formula, written out
    if symmetric:
        scale, zero = 2 * np.abs(blocks).max(axis=2, keepdims=True) / 15, 8.0
    else:
        low, high = blocks.min(axis=2, keepdims=True), blocks.max(axis=2, keepdims=True)
        scale = (high - low) / 15
        zero = np.clip(np.round(-low / scale), 0, 15)
    formula = ((np.clip(np.round(blocks / scale) + zero, 0, 15) - zero) * scale).reshape(n, k).T
    np.testing.assert_allclose(nc, formula, rtol=0, atol=1e-5)
    if symmetric:
        assert np.abs(nc - mlas).max() > 0.1 * np.abs(weight).max()  # two different grids
        assert ((nc - weight) ** 2).mean() > ((mlas - weight) ** 2).mean()  # neural-compressor's steps are coarser
    else:
        np.testing.assert_allclose(nc, mlas, rtol=0, atol=1e-5)  # asymmetric: one grid (each block spans 0 here)
