"""The ONNX folder onnxruntime-genai loads, as the builder writes it and the ONNX passes rewrite it: its graph
file (:data:`MODEL_FILE`, weights beside it), its companions (genai_config.json, tokenizer files), and an fp32
one for a model that is not ONNX yet (:func:`fp32_source`)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from autotune.context import PassContext
from autotune.models.handle import ModelHandle

__all__ = ["MODEL_FILE", "copy_companions", "fp32_source", "save_with_external_data"]

MODEL_FILE = "model.onnx"


def fp32_source(model: ModelHandle, ctx: PassContext) -> Path:
    """An fp32 ONNX folder for ``model``: itself when it already is one, else a fresh fp32 build."""
    if model.kind == "onnx":
        return model.path
    from autotune.builder.build import FP32, build_onnx

    folder = ctx.work_dir / "fp32"
    build_onnx(model.path, folder, FP32, provider=ctx.provider, work_dir=ctx.work_dir)
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
