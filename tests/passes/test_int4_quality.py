"""Issue 14: each int4 quantizer's model predicts the next token as its fp32 build does, and a broken
quantizer (random weights, zeroed scales) fails the same check."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.passes.test_int4_support import (
    MAX_KL,
    MIN_TOP1,
    agreement,
    agrees,
    dataset,
    fp32_build,
    next_token_logprobs,
    run_pass,
    sharp_tiny_model,
)

QUANTIZERS: dict[str, tuple[str, dict[str, Any]]] = {
    "rtn": ("OnnxBlockWiseRtnQuantization", {"block_size": 32}),  # neural-compressor's RTN grid (weight_only.NC_RTN_GRID)
    "gptq": ("OnnxGptqQuantization", {"block_size": 32, "calibration_rows": 32}),
    "gptq-asym-16": ("OnnxGptqQuantization", {"block_size": 16, "is_symmetric": False, "calibration_rows": 16}),
    "mixed-int8": ("OnnxMixedPrecisionQuantization", {"budget": 0.25, "calibration_rows": 16}),
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("int4-quality")
    model = sharp_tiny_model(root / "sharp")
    fp32 = fp32_build(model, root / "fp32")
    data = dataset(model, root)
    return {"root": root, "fp32": fp32, "data": data, "reference": next_token_logprobs(fp32, data), "built": {}}


def quantized(setup: dict[str, Any], name: str) -> Path:
    if name not in setup["built"]:
        pass_type, params = QUANTIZERS[name]
        setup["built"][name] = run_pass(pass_type, params, setup["fp32"], setup["root"] / name, setup["data"])
    return setup["built"][name]


def test_the_reference_is_a_peaked_varied_distribution(setup: dict[str, Any]) -> None:
    # Else a zeroed model (uniform) or one that always says the same token would agree with it.
    reference = setup["reference"]
    assert len(set(reference.argmax(axis=1))) >= 3
    assert float(np.exp(reference).max(axis=1).mean()) > 0.5


@pytest.mark.parametrize("name", list(QUANTIZERS))
def test_quantized_next_token_agrees_with_fp32(setup: dict[str, Any], name: str) -> None:
    candidate = next_token_logprobs(quantized(setup, name), setup["data"])
    top1, kl = agreement(setup["reference"], candidate)
    assert top1 >= MIN_TOP1 and kl <= MAX_KL, (name, top1, kl)


def corrupt(source: Path, out: Path, mode: str) -> Path:
    """``source`` with every MatMulNBits weight replaced by random codes, or every scale zeroed."""
    import onnx
    from onnx import numpy_helper

    from autotune.builder.onnx_folder import save_with_external_data

    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(source, out)
    model = onnx.load(str(out / "model.onnx"))
    quantized_inputs = {n.input[1 if mode == "random" else 2] for n in model.graph.node if n.op_type == "MatMulNBits"}
    rng = np.random.default_rng(0)
    for tensor in model.graph.initializer:
        if tensor.name in quantized_inputs:
            array = numpy_helper.to_array(tensor)
            bad = rng.integers(0, 256, array.shape, dtype=np.uint8) if mode == "random" else np.zeros_like(array)
            tensor.CopyFrom(numpy_helper.from_array(bad, tensor.name))
    for file in out.glob("model.onnx*"):
        file.unlink()
    save_with_external_data(model, out)
    return out


@pytest.mark.parametrize("mode", ["random", "zeroed"])
def test_a_broken_quantizer_fails_the_agreement_check(setup: dict[str, Any], mode: str) -> None:
    good = quantized(setup, "gptq")
    bad = corrupt(good, setup["root"] / f"broken-{mode}", mode)
    candidate = next_token_logprobs(bad, setup["data"])
    assert not agrees(setup["reference"], candidate), agreement(setup["reference"], candidate)
    assert agrees(setup["reference"], next_token_logprobs(good, setup["data"]))


def test_gptq_has_lower_output_error_than_round_to_nearest() -> None:
    # ONNX Runtime's own GPTQ equals RTN (it never propagates the error); this one must beat it. The RTN here is
    # rtn_dequantized: GPTQ's own grid (MLAS's, weight_only.MLAS_GRID), so only the error compensation differs.
    from autotune.quant.gptq import gptq_codes
    from autotune.quant.sensitivity import rtn_dequantized

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((96, 24))
    inputs = rng.standard_normal((400, 96)) @ rng.standard_normal((96, 96))  # correlated channels
    hessian = inputs.T @ inputs / len(inputs)

    def error(approx: np.ndarray) -> float:
        delta = weight - approx
        return float(np.trace(delta.T @ hessian @ delta) / np.trace(weight.T @ hessian @ weight))

    for symmetric in (True, False):
        codes, scales, zeros = gptq_codes(weight, hessian, block_size=32, symmetric=symmetric, damp_percent=0.01)
        deq = ((codes.astype(np.float64) - np.repeat(zeros, 32, axis=0)) * np.repeat(scales, 32, axis=0))[:96]
        assert codes.max() <= 15
        assert error(deq) < 0.7 * error(rtn_dequantized(weight, 32, symmetric))
