"""The ``OnnxDynamicQuantization`` pass: ONNX Runtime's dynamic int8 quantization of the MatMuls, an alternative
to the model builder's own precision.

It takes a builder fp32 ONNX folder (or an HF folder, which it first builds at fp32) and writes an ONNX folder that
onnxruntime-genai still loads: the same genai_config.json, tokenizer and file names (:mod:`autotune.builder.onnx_folder`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from autotune.builder.onnx_folder import MODEL_FILE, copy_companions, fp32_source, save_with_external_data
from autotune.context import PassContext
from autotune.library_noise import quiet_quantizers
from autotune.models.handle import ModelHandle
from autotune.passes.base import Pass, PassParams, register_pass, searchable


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
    weight_precision = "int8"

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
