"""The deployable model: ``<output_dir>/best/`` (the ONNX folder as genai loads it) and its model card."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autotune.errors import ModelError, UserError
from autotune.fileio import atomic_copy_tree, write_json, write_text
from autotune.records import StudyView, TrialRecord

__all__ = ["config_hash", "export_best", "model_card", "card_markdown", "reproduce_config"]

log = logging.getLogger("autotune")


def reproduce_config(view: StudyView, record: TrialRecord) -> dict[str, Any]:
    """A config that rebuilds exactly this trial's model with ``search_strategy: false``."""
    cfg = view.meta.run_config()
    ran = {p.name: p.type for p in record.passes}  # the alternative each pass group chose
    passes = {name: {"type": ran.get(name, spec.type), **record.params.get(name, {})} for name, spec in cfg.passes.items()}
    engine = {"execution_providers": list(cfg.engine.execution_providers), "cache_dir": str(cfg.engine.cache_dir),
              "evaluator": cfg.engine.evaluator, "search_strategy": False,
              "output_dir": str(cfg.engine.output_dir / f"reproduce-trial-{record.number}")}
    return {
        "input_model": cfg.input_model.model_dump(mode="json", exclude_none=True),
        "data_configs": [d.model_dump(mode="json") for d in cfg.data_configs],
        "passes": passes,
        "evaluators": {name: e.model_dump(mode="json") for name, e in cfg.evaluators.items()},
        "engine": engine,
    }


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def model_card(view: StudyView, selection: Any, reproduce: dict[str, Any]) -> dict[str, Any]:
    from autotune.evaluation.base import environment

    record: TrialRecord = selection.record
    return {
        "study": view.name,
        "trial": record.number,
        "model_key": record.model_key,
        "feasible": selection.feasible,
        "selection": {"policy": selection.policy, "rule": selection.rule, "missed_by": selection.missed_by},
        "parameters": record.params,
        "searched": record.point,
        "metrics": {k: m.model_dump(mode="json") for k, m in record.metrics.items()},
        "baseline": {k: m.model_dump(mode="json") for k, m in view.baseline.items()},
        "objectives": [o.model_dump(mode="json") for o in view.objectives],
        "constraints": [b.model_dump(mode="json") for b in view.bounds],
        "provider": view.provider,
        "device": view.meta.device,
        "environment": environment(),
        "data": {d["name"]: d.get("data_files") for d in view.meta.config.get("data_configs", [])},
        "config_sha256": config_hash(view.meta.config),
        "reproduce_config": reproduce,
    }


def card_markdown(card: dict[str, Any]) -> str:
    lines = [f"# Model card: {card['study']}, trial {card['trial']}", ""]
    if not card["feasible"]:
        lines += ["> **No trial met the constraints.** This is the least-infeasible trial: " + card["selection"]["rule"], ""]
    lines += [f"Selected by `{card['selection']['policy']}`: {card['selection']['rule']}.", "",
              f"- model key: `{card['model_key']}`", f"- provider: {card['provider']}",
              f"- config sha256: `{card['config_sha256']}`", "", "## Metrics", "",
              "| metric | value | 95% CI | baseline | change |", "|---|---|---|---|---|"]
    for key, m in card["metrics"].items():
        base = card["baseline"].get(key)
        ci = f"[{m['ci_low']:.3f}, {m['ci_high']:.3f}]" if m.get("ci_low") is not None else ""
        change = f"{m['value'] - base['value']:+.4g}" if base else ""
        lines.append(f"| {key} | {m['value']:.4g} {m.get('unit', '')} | {ci} | {base['value']:.4g} | {change} |" if base
                     else f"| {key} | {m['value']:.4g} {m.get('unit', '')} | {ci} |  |  |")
    lines += ["", "## Parameters", ""]
    for name, params in card["parameters"].items():
        lines.append(f"- **{name}**: " + ", ".join(f"{k}={v}" for k, v in params.items() if k != "training_args"))
    env = {**card.get("device", {}), **card["environment"]}
    lines += ["", "## Environment", ""] + [f"- {k}: {v}" for k, v in env.items()]
    lines += ["", "## Reproduce", "", "Save the `reproduce_config` of `model_card.json` as a YAML/JSON file and run",
              "`autotune run --config FILE`: it rebuilds this model (same model key) with `search_strategy: false`.", ""]
    return "\n".join(lines)


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

    def add_card(staging: Path) -> None:
        write_json(staging / "model_card.json", card)
        write_text(staging / "model_card.md", card_markdown(card))

    return atomic_copy_tree(got[0], output_dir / "best", extra=add_card)
