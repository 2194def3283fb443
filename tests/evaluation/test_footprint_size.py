"""Size on disk counts what is deployed, not the passes' reports written beside the model."""

from __future__ import annotations

from pathlib import Path

from autotune.evaluation.footprint import folder_bytes


def test_size_ignores_pass_reports_whose_length_varies_with_timings(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"x" * 1000)
    (tmp_path / "genai_config.json").write_text("{}")
    before = folder_bytes(tmp_path)
    (tmp_path / "quant_stats.json").write_text('{"seconds": 12.345678}')
    (tmp_path / "drop_layers.json").write_text('{"seconds": 1.5}')
    assert folder_bytes(tmp_path) == before == 1002
    (tmp_path / "tokenizer.json").write_text("{}")  # a file genai reads is counted
    assert folder_bytes(tmp_path) == 1004
