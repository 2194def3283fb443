"""The deployable model: ``<output_dir>/best/`` (the ONNX folder as genai loads it) and its model card."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autotune.card import card_markdown, model_card
from autotune.config.schema import RunConfig
from autotune.errors import ModelError, UserError
from autotune.fileio import atomic_copy_tree, write_json, write_text
from autotune.records import StudyView, TrialRecord
from autotune.report.predictions import prediction_rows, predictions_jsonl

__all__ = ["export_best", "reproduce_config"]

log = logging.getLogger("autotune")


def reproduce_config(view: StudyView, record: TrialRecord) -> dict[str, Any]:
    """A config that rebuilds exactly this trial's model with ``search_strategy: false``."""
    cfg = RunConfig.model_validate(view.meta.config)  # the stored config, with the schema's defaults
    ran = {p.name: p.type for p in record.passes}  # the alternative each pass group chose
    passes = {name: {"type": ran.get(name, spec.type), **record.params.get(name, {})} for name, spec in cfg.passes.items()}
    engine = {"execution_providers": list(cfg.engine.execution_providers), "cache_dir": str(cfg.engine.cache_dir),
              "evaluator": cfg.engine.evaluator, "search_strategy": False,
              "output_dir": str(cfg.engine.output_dir / f"reproduce-trial-{record.number}")}
    return {
        "input_model": cfg.for_base(record.base).input_model.model_dump(mode="json", exclude_none=True),  # the trial's base
        "data_configs": [d.model_dump(mode="json") for d in cfg.data_configs],
        "passes": passes,
        "evaluators": {name: e.model_dump(mode="json") for name, e in cfg.evaluators.items()},
        "engine": engine,
    }


def export_best(view: StudyView, selection: Any, output_dir: Path, *, cache: Any,
                rebuild: Callable[[TrialRecord], Any] | None = None) -> Path | None:
    """Copy the selected trial's model folder to ``output_dir/best`` with its model card.

    A model evicted from the cache is rebuilt (``rebuild``: the trial's point through the pipeline);
    if that cannot be done, a one-line error and nothing changes (``best/`` keeps its old model).
    """
    record = selection.record
    if record is None or record.model_key is None:
        return None
    got = cache.get(record.model_key)
    if got is None and rebuild is not None:
        log.info("trial %d's model is not in the cache; rebuilding it", record.number)
        try:
            got = rebuild(record)
        except UserError as exc:
            raise ModelError(f"trial {record.number}", f"its model was evicted from the cache and cannot be rebuilt ({exc}); "
                             "best/ and selection.json are unchanged") from None
    if got is None:
        raise ModelError(f"trial {record.number}", "its model is no longer in the cache and cannot be rebuilt here; "
                         "best/ and selection.json are unchanged")
    card = model_card(view, selection, reproduce_config(view, record))

    rows = prediction_rows(record.test_metrics)
    split = "test" if rows else "validation"
    rows = rows or prediction_rows(record.metrics)

    def add_card(staging: Path) -> None:
        if rows:  # every row the selected model generated for, with its reference and per-row scores
            write_text(staging / "predictions.jsonl", predictions_jsonl(rows, split=split))
        write_json(staging / "model_card.json", card)
        markdown = card_markdown(card)
        write_text(staging / "model_card.md", markdown)
        write_text(staging / "README.md", markdown)  # Hugging Face's card file: best/ publishes as it is

    return atomic_copy_tree(got[0], output_dir / "best", extra=add_card)
