"""onnxruntime-genai's model builder, run in-process: an HF folder in, an ONNX folder genai loads out.

:func:`build_onnx`, below the passes that build: the ``ModelBuilder`` pass (:mod:`autotune.passes.model_builder`,
whose ``ModelBuilderParams`` are the settings of its builds) and the int4 passes' fp32 source
(:func:`autotune.builder.onnx_folder.fp32_source`, an :data:`FP32` build).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from autotune.builder.process import run_build
from autotune.providers import provider as provider_row

__all__ = ["BUILDER_LOGGERS", "FP32", "BuildSettings", "build_onnx"]

log = logging.getLogger("autotune")


class BuildSettings(Protocol):
    """What :func:`build_onnx` reads of its settings: the ``ModelBuilder`` pass's parameters
    (:class:`autotune.passes.model_builder.ModelBuilderParams`), or :data:`FP32`."""

    @property
    def precision(self) -> str: ...

    def extra_options(self) -> list[str]: ...


@dataclass(frozen=True)
class _Fp32Build:
    """An fp32 build with no extra option: ``ModelBuilderParams(precision="fp32")`` as :func:`build_onnx` reads it
    (tests/builder/test_build_settings.py keeps the two the same)."""

    precision: str = "fp32"

    def extra_options(self) -> list[str]:
        return []


# The int4 passes' fp32 source, built below the pass whose parameters it would otherwise need.
FP32: BuildSettings = _Fp32Build()


# The loggers the model builder and the quantizers it calls write to.
BUILDER_LOGGERS = ("onnxruntime.quantization", "onnxruntime_genai", "onnx_ir", "neural_compressor")


def build_onnx(source: Path, output: Path, params: BuildSettings, *, provider: str, work_dir: Path) -> None:
    ep = provider_row(provider).builder
    scratch = (work_dir / "builder_cache").absolute()
    scratch.mkdir(parents=True, exist_ok=True)
    log_path = (work_dir / "model_builder.log").absolute()
    # The builder prints every tensor it writes; keep that in a log file, not the terminal. ONNX Runtime's
    # quantizer logs at ERROR what is normal for an int8 build ("Gather only supports 4 bits quantization":
    # the embedding stays unquantized); the records of the loggers the builder uses go to the log file too.
    # It runs in a child process (autotune.builder.process): a redirect in this one, of sys.stdout or
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
