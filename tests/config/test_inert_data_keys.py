"""Olive data keys autotune cannot apply (corpus_strategy: join, pad_to_max_len: true, use_attention_mask: false)
are accepted for compatibility but warned about, naming the user's key path; values autotune honours stay silent."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from autotune.config_checks import load_config

TEMPLATE = "### Text: {phrase}\n### The tone is:\n{tone}"


@pytest.fixture()
def warnings_seen() -> Iterator[list[str]]:
    """Warnings of the ``autotune`` logger (it does not propagate to the root once the CLI set it up)."""
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                seen.append(record.getMessage())

    logger = logging.getLogger("autotune")
    handler, level = Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield seen
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _config(tmp_path: Path, **pre_process: Any) -> dict[str, Any]:
    (tmp_path / "model").mkdir(exist_ok=True)
    return {
        "input_model": {"type": "HfModel", "model_path": str(tmp_path / "model")},
        "data_configs": [{
            "name": "tones", "type": "HuggingfaceContainer",
            "load_dataset_config": {"data_name": "json", "data_files": "tones.jsonl"},
            "pre_process_data_config": {"params": {"text_template": TEMPLATE, **pre_process}},
        }],
        "passes": {"build": {"type": "ModelBuilder", "precision": "int4"}},
        "engine": {"search_strategy": False},
    }


@pytest.mark.parametrize(
    ("key", "value", "shown"),
    [("corpus_strategy", "join", "join"), ("pad_to_max_len", True, "true"), ("use_attention_mask", False, "false")],
)
def test_a_data_key_autotune_cannot_apply_is_warned_about_once(tmp_path: Path, warnings_seen: list[str], key: str,
                                                              value: Any, shown: str) -> None:
    load_config(_config(tmp_path, **{key: value}), base_dir=tmp_path)
    path = f"data_configs[0].pre_process_data_config.params.{key}"
    assert [w for w in warnings_seen if key in w] == [w for w in warnings_seen if w.startswith(f"{path}: {shown} has no effect here: ")]
    assert len([w for w in warnings_seen if key in w]) == 1, warnings_seen


def test_data_keys_at_the_values_autotune_applies_are_silent(tmp_path: Path, warnings_seen: list[str]) -> None:
    load_config(_config(tmp_path, corpus_strategy="line-by-line", pad_to_max_len=False, use_attention_mask=True), base_dir=tmp_path)
    load_config(_config(tmp_path), base_dir=tmp_path)
    assert warnings_seen == []
