"""An ONNX build of the tiny Llama, shared by the evaluation tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_onnx(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from autotune.passes.model_builder import ModelBuilderParams, build_onnx

    root = tmp_path_factory.mktemp("tiny-onnx")
    build_onnx(tiny_model, root / "fp32", ModelBuilderParams(precision="fp32"), provider="CPUExecutionProvider", work_dir=root / "work")
    return root / "fp32"
