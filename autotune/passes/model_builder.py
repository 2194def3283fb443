"""The ``ModelBuilder`` pass (also registered as ``OnnxConversion``): an HF folder in, an ONNX folder
onnxruntime-genai loads out, built by :func:`autotune.builder.build.build_onnx` (or, for int4 by
GPTQ, the builder's fp32 graph quantized by the GPTQ pass)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from autotune.builder.build import BUILDER_LOGGERS, build_onnx
from autotune.context import PassContext
from autotune.errors import ConfigError
from autotune.models.handle import ModelHandle
from autotune.passes.base import Pass, PassParams, PassView, register_pass, searchable
from autotune.passes.onnx_gptq_quantization import GptqParams, OnnxGptqQuantization

# build_onnx is looked up here at call time: tests replace ``model_builder.build_onnx`` to inject faults.
__all__ = ["BUILDER_LOGGERS", "GPTQ_FIELDS", "QUANTIZED", "ModelBuilder", "ModelBuilderParams", "build_onnx"]

QUANTIZED = ("int4", "int8")
GPTQ_FIELDS = ("calibration_rows", "damp_percent", "calibration_seed", "train_data_config")


class ModelBuilderParams(PassParams):
    ALIASES: ClassVar[dict[str, str]] = {
        "int4_block_size": "block_size",
        "int4_accuracy_level": "accuracy_level",
        "int4_is_symmetric": "is_symmetric",
        "int4_algo_config": "algo_config",
        "int4_op_types_to_quantize": "op_types_to_quantize",
    }
    CONDITIONS: ClassVar[dict[str, tuple[str, tuple[Any, ...]]]] = {
        "block_size": ("precision", QUANTIZED),
        "accuracy_level": ("precision", QUANTIZED),
        "is_symmetric": ("precision", QUANTIZED),
        "algo_config": ("precision", QUANTIZED),
        "matmul_mixed_precision": ("precision", ("int4",)),
        "nodes_to_exclude": ("precision", QUANTIZED),
    }

    precision: Literal["int4", "int8", "fp16", "fp32"] = searchable("int4", space=["int4", "int8", "fp32"])
    block_size: Literal[16, 32, 64, 128, 256] = searchable(32, space=[32, 128])
    accuracy_level: Literal[0, 1, 2, 3, 4] = searchable(0, space=[0, 4])
    is_symmetric: bool = searchable(True, space=[True, False])
    # How the weights are quantized. ``auto``: int4 is calibrated by GPTQ on the training data config when
    # there is one (data-free rounding loses 10-25 points on the main job), else the builder's default
    # round-to-nearest; int8 is always the builder's default (rounding at 8 bits is already near-lossless).
    algo_config: Literal["auto", "default", "rtn", "k_quant", "gptq"] = searchable("auto", space=["default", "gptq"])
    # GPTQ's calibration (``algo_config`` gptq, or auto with data): rows of the training split only.
    calibration_rows: int = searchable(128, space=[32, 128], ge=1, le=4096)
    damp_percent: float = searchable(0.01, space=[0.01, 0.1], gt=0, lt=1)
    calibration_seed: int = 0
    train_data_config: str | None = None
    # e.g. "last_matmul:int8" keeps the LM head in int8 while the body is int4.
    matmul_mixed_precision: str | None = searchable(None, space=[None, "last_matmul:int8"])
    nodes_to_exclude: list[str] | None = None
    exclude_embeds: bool = False
    exclude_lm_head: bool = False

    def algorithm(self) -> str:
        """The algorithm that runs: ``auto`` resolved (GPTQ for int4 when calibration data is at hand)."""
        if self.algo_config != "auto":
            return self.algo_config
        return "gptq" if self.precision == "int4" and self.train_data_config else "default"

    def applies(self, name: str) -> bool:
        if name in GPTQ_FIELDS:
            return self.precision in QUANTIZED and self.algorithm() == "gptq"
        return super().applies(name)

    def resolved(self) -> dict[str, Any]:
        out = super().resolved()
        if "algo_config" in out:
            out["algo_config"] = self.algorithm()  # the key and the record name what ran, never "auto"
        return out

    def extra_options(self) -> list[str]:
        opts: list[str] = []
        if self.precision in QUANTIZED:
            opts += [f"block_size={self.block_size}", f"is_symmetric={str(self.is_symmetric).lower()}"]
            if self.accuracy_level:
                opts.append(f"accuracy_level={self.accuracy_level}")
            if self.algorithm() not in ("default", "gptq"):
                opts.append(f"algo_config={self.algorithm()}")
            if self.nodes_to_exclude:
                opts.append(f"nodes_to_exclude={','.join(self.nodes_to_exclude)}")
        if self.precision == "int4" and self.matmul_mixed_precision:
            opts.append(f"matmul_mixed_precision={self.matmul_mixed_precision}")
        if self.exclude_embeds:
            opts.append("exclude_embeds=true")
        if self.exclude_lm_head:
            opts.append("exclude_lm_head=true")
        return opts


@register_pass("OnnxConversion", "model_builder")
class ModelBuilder(Pass):
    type_name = "ModelBuilder"
    Params = ModelBuilderParams
    accepts = ("hf",)
    output_kind = "onnx"
    provider_in_key = True
    may_use_data = True
    REPORT_FILES = frozenset({"quant_stats.json"})  # int4 by GPTQ: the same stats as OnnxGptqQuantization's

    @classmethod
    def view(cls, params: dict[str, Any], summary: dict[str, Any] | None) -> PassView:
        return PassView(precision=str(params["precision"]) if "precision" in params else None)

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
