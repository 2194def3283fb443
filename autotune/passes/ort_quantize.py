"""ONNX Runtime quantizers as alternatives to the model builder's own precision.

Both take a builder fp32 ONNX folder (or an HF folder, which they first build at fp32) and write an
ONNX folder that onnxruntime-genai still loads: the same genai_config.json, tokenizer and file names.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from autotune.context import PassContext
from autotune.logging_setup import quiet_quantizers
from autotune.models.handle import ModelHandle
from autotune.passes.base import Pass, PassParams, register_pass, searchable

log = logging.getLogger("autotune")
MODEL_FILE = "model.onnx"


def fp32_source(model: ModelHandle, ctx: PassContext) -> Path:
    """An fp32 ONNX folder for ``model``: itself when it already is one, else a fresh fp32 build."""
    if model.kind == "onnx":
        return model.path
    from autotune.passes.genai_build import ModelBuilderParams, build_onnx

    folder = ctx.work_dir / "fp32"
    build_onnx(model.path, folder, ModelBuilderParams(precision="fp32"), provider=ctx.provider, work_dir=ctx.work_dir)
    return folder


def copy_companions(source: Path, output: Path) -> None:
    """Everything but the ONNX graph and its weights: genai_config.json, tokenizer files."""
    for item in source.iterdir():
        if item.is_file() and not item.name.startswith(MODEL_FILE):
            shutil.copy(item, output / item.name)


def save_with_external_data(model: Any, output: Path) -> None:
    import onnx

    onnx.save_model(model, str(output / MODEL_FILE), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=f"{MODEL_FILE}.data", size_threshold=1024)


class DynamicQuantizationParams(PassParams):
    weight_type: Literal["QInt8", "QUInt8"] = searchable("QInt8", space=["QInt8", "QUInt8"])
    per_channel: bool = searchable(False, space=[False, True])
    reduce_range: bool = False
    op_types_to_quantize: list[str] = Field(default_factory=lambda: ["MatMul"])
    nodes_to_exclude: list[str] = Field(default_factory=list)


@register_pass("ort_dynamic_quantization", "OnnxDynamicQuantization")
class OnnxDynamicQuantization(Pass):
    """Dynamic int8 quantization (``onnxruntime.quantization.quantize_dynamic``) of the MatMuls."""

    type_name = "OnnxDynamicQuantization"
    Params = DynamicQuantizationParams
    accepts = ("onnx", "hf")
    output_kind = "onnx"
    provider_in_key = True

    def run(self, model: ModelHandle, params: DynamicQuantizationParams, ctx: PassContext, output: Path) -> None:  # type: ignore[override]
        from onnxruntime.quantization import QuantType, quantize_dynamic

        source = fp32_source(model, ctx)
        staged = ctx.work_dir / "dynamic.onnx"
        with quiet_quantizers():
            quantize_dynamic(
                source / MODEL_FILE, staged, weight_type=getattr(QuantType, params.weight_type), per_channel=params.per_channel,
                reduce_range=params.reduce_range, op_types_to_quantize=params.op_types_to_quantize,
                nodes_to_exclude=params.nodes_to_exclude or None, use_external_data_format=True,
            )
        import onnx

        save_with_external_data(onnx.load(str(staged)), output)
        copy_companions(source, output)


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
    pass's ``rtn`` (see :mod:`autotune.passes.weight_only`)."""

    type_name = "OnnxBlockWiseRtnQuantization"
    Params = BlockWiseRtnParams
    accepts = ("onnx", "hf")
    output_kind = "onnx"
    provider_in_key = True

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
        from autotune.passes.weight_only import tie_embedding

        tie_embedding(quantizer.model.model)  # a tied embedding shares the 4-bit LM head instead of an fp32 copy
        save_with_external_data(quantizer.model.model, output)
        copy_companions(source, output)
