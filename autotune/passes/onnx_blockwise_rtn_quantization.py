"""The ``OnnxBlockWiseRtnQuantization`` pass: ONNX Runtime's 4-bit block-wise round-to-nearest, an alternative to
the model builder's own precision.

It takes a builder fp32 ONNX folder (or an HF folder, which it first builds at fp32) and writes an ONNX folder that
onnxruntime-genai still loads: the same genai_config.json, tokenizer and file names (:mod:`autotune.builder.onnx_folder`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from autotune.builder.onnx_folder import MODEL_FILE, copy_companions, fp32_source, save_with_external_data
from autotune.context import PassContext
from autotune.library_noise import quiet_quantizers
from autotune.models.handle import ModelHandle
from autotune.passes.base import Pass, PassParams, register_pass, searchable


class BlockWiseRtnParams(PassParams):
    CONDITIONS: ClassVar[dict[str, tuple[str, tuple[Any, ...]]]] = {}
    block_size: Literal[16, 32, 64, 128, 256] = searchable(32, space=[32, 128])
    is_symmetric: bool = searchable(True, space=[True, False])
    accuracy_level: Literal[0, 1, 2, 3, 4] = searchable(0, space=[0, 4])
    nodes_to_exclude: list[str] = Field(default_factory=list)


@register_pass("ort_blockwise_rtn", "OnnxMatMul4Quantizer")
class OnnxBlockWiseRtnQuantization(Pass):
    """4-bit weight-only block-wise RTN (MatMulNBits) of an fp32 builder model, on neural-compressor's RTN grid
    (``RTNWeightOnlyQuantConfig``; symmetric scale 2 * max|w| / 15), not the MLAS grid of GPTQ and the mixed
    pass's ``rtn`` (see :mod:`autotune.quant.weight_only`)."""

    type_name = "OnnxBlockWiseRtnQuantization"
    Params = BlockWiseRtnParams
    accepts = ("onnx", "hf")
    output_kind = "onnx"
    provider_in_key = True
    weight_precision = "int4"

    def run(self, model: ModelHandle, params: BlockWiseRtnParams, ctx: PassContext, output: Path) -> None:  # type: ignore[override]
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer, RTNWeightOnlyQuantConfig

        source = fp32_source(model, ctx)
        graph = onnx.load(str(source / MODEL_FILE))
        with quiet_quantizers():
            quantizer = MatMulNBitsQuantizer(
                graph, bits=4, block_size=params.block_size, is_symmetric=params.is_symmetric,
                accuracy_level=params.accuracy_level or None, nodes_to_exclude=params.nodes_to_exclude or None,
                algo_config=RTNWeightOnlyQuantConfig(),
            )
            quantizer.process()
        from autotune.quant.weight_only import tie_embedding

        tie_embedding(quantizer.model.model)  # a tied embedding shares the 4-bit LM head instead of an fp32 copy
        save_with_external_data(quantizer.model.model, output)
        copy_companions(source, output)
