"""The ``ModelBuilder`` pass (also registered as ``OnnxConversion``): an HF folder in, an ONNX folder
onnxruntime-genai loads out, built by :func:`autotune.passes.genai_build.build_onnx` (or, for int4 by
GPTQ, the builder's fp32 graph quantized by the GPTQ pass)."""

from __future__ import annotations

from pathlib import Path

from autotune.context import PassContext
from autotune.errors import ConfigError
from autotune.models.handle import ModelHandle
from autotune.passes.base import Pass, register_pass
from autotune.passes.genai_build import BUILDER_LOGGERS, GPTQ_FIELDS, QUANTIZED, ModelBuilderParams, build_onnx
from autotune.passes.int4 import GptqParams, OnnxGptqQuantization

# build_onnx is looked up here at call time: tests replace ``model_builder.build_onnx`` to inject faults.
__all__ = ["BUILDER_LOGGERS", "GPTQ_FIELDS", "QUANTIZED", "ModelBuilder", "ModelBuilderParams", "build_onnx"]


@register_pass("OnnxConversion", "model_builder")
class ModelBuilder(Pass):
    type_name = "ModelBuilder"
    Params = ModelBuilderParams
    accepts = ("hf",)
    output_kind = "onnx"
    provider_in_key = True
    may_use_data = True

    def reads_data(self, params: ModelBuilderParams) -> bool:  # type: ignore[override]
        return params.precision in QUANTIZED and params.algorithm() == "gptq"

    def check(self, params: ModelBuilderParams, *, provider: str, origin: str) -> None:  # type: ignore[override]
        if params.algo_config == "gptq" and params.precision == "int8":
            raise ConfigError(f"{origin}.algo_config", "gptq quantizes to 4 bits only; for int8 use default or k_quant "
                              "(or algo_config: auto, which calibrates int4 by GPTQ and rounds int8)")
        if params.precision == "int4" and params.algorithm() == "gptq":
            for name in ("matmul_mixed_precision", "exclude_embeds", "exclude_lm_head"):
                if getattr(params, name):
                    raise ConfigError(f"{origin}.{name}", "is a model builder option that GPTQ does not take; set "
                                      "algo_config: default to build int4 by the builder's rounding with it")
        if params.algo_config == "gptq" and not params.train_data_config:
            raise ConfigError(f"{origin}.train_data_config", "gptq calibrates on a data config; name one "
                              "(or use algo_config: auto, which falls back to round-to-nearest without data)")
        if params.precision == "fp16" and provider == "CPUExecutionProvider":
            raise ConfigError(
                f"{origin}.precision",
                "fp16 is not supported on CPUExecutionProvider (ONNX Runtime has no fp16 CPU kernels for "
                "these ops); use fp32, int8 or int4 on CPU, or fp16 with CUDAExecutionProvider",
            )
        # A CUDA build without the [gpu] extra, or with an onnxruntime-gpu that would fall back to the CPU.
        from autotune.device import check_provider

        check_provider(provider)

    def run(self, model: ModelHandle, params: ModelBuilderParams, ctx: PassContext, output: Path) -> None:  # type: ignore[override]
        if params.precision == "int4" and params.algorithm() == "gptq":
            # The builder's fp32 graph, then GPTQ on its MatMuls (the GPTQ pass's own run: same graph, same
            # tied embedding, same quant_stats.json as configuring OnnxGptqQuantization after an fp32 build).
            fp32 = ctx.work_dir / "fp32"
            build_onnx(model.path, fp32, ModelBuilderParams(precision="fp32"), provider=ctx.provider, work_dir=ctx.work_dir)
            gptq = GptqParams(block_size=params.block_size, accuracy_level=params.accuracy_level, is_symmetric=params.is_symmetric,
                              calibration_rows=params.calibration_rows, damp_percent=params.damp_percent,
                              calibration_seed=params.calibration_seed, nodes_to_exclude=params.nodes_to_exclude or [])
            OnnxGptqQuantization().run(ModelHandle(kind="onnx", path=fp32, key=model.key), gptq, ctx, output)
            return
        build_onnx(model.path, output, params, provider=ctx.provider, work_dir=ctx.work_dir)
