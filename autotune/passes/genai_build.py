"""onnxruntime-genai's model builder, run in-process: an HF folder in, an ONNX folder genai loads out.

The builder's parameters and :func:`build_onnx`, below the passes that build: the ``ModelBuilder`` pass
(:mod:`autotune.passes.model_builder`) and the int4 passes' fp32 source (:func:`autotune.passes.ort_quantize.fp32_source`).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, ClassVar, Literal

from autotune.passes.base import PassParams, searchable
from autotune.passes.builder_process import run_build
from autotune.providers import provider as provider_row

__all__ = ["BUILDER_LOGGERS", "GPTQ_FIELDS", "QUANTIZED", "ModelBuilderParams", "build_onnx"]

log = logging.getLogger("autotune")

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


# The loggers the model builder and the quantizers it calls write to.
BUILDER_LOGGERS = ("onnxruntime.quantization", "onnxruntime_genai", "onnx_ir", "neural_compressor")


def build_onnx(source: Path, output: Path, params: ModelBuilderParams, *, provider: str, work_dir: Path) -> None:
    ep = provider_row(provider).builder
    scratch = (work_dir / "builder_cache").absolute()
    scratch.mkdir(parents=True, exist_ok=True)
    log_path = (work_dir / "model_builder.log").absolute()
    # The builder prints every tensor it writes; keep that in a log file, not the terminal. ONNX Runtime's
    # quantizer logs at ERROR what is normal for an int8 build ("Gather only supports 4 bits quantization":
    # the embedding stays unquantized); the records of the loggers the builder uses go to the log file too.
    # It runs in a child process (autotune.passes.builder_process): a redirect in this one, of sys.stdout or
    # of fds 1 and 2, would send every other thread's console lines (the study's heartbeat, the progress
    # display) into the log too. That process is started once and serves every build of this one: measured
    # on the tiny test model (2 busy cores), the first build took 5.3 s against 1.45 s in-process (the
    # child's imports: torch, transformers, onnx), every later one 0.09 s against 0.08-0.2 s; it holds
    # ~335 MB of its own between builds.
    run_build({"args": ["", str(Path(source).absolute()), str(Path(output).absolute()), params.precision, ep, str(scratch)],
               "extra_options": params.extra_options(), "loggers": list(BUILDER_LOGGERS)}, log_path)
    shutil.rmtree(scratch, ignore_errors=True)
    if not (output / "genai_config.json").is_file():
        raise RuntimeError(f"the model builder wrote no genai_config.json (see {log_path})")
