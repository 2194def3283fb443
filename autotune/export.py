"""The deployable model: ``<output_dir>/best/`` (the ONNX folder as genai loads it) and its model card."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from autotune.runner import link_or_copy, replace_dir, write_json
from autotune.search.records import TrialRecord

log = logging.getLogger("autotune")


def reproduce_config(config: dict[str, Any], record: TrialRecord) -> dict[str, Any]:
    """A config that rebuilds exactly this trial's model with ``search_strategy: false``."""
    passes = {}
    ran = {p.name: p.type for p in record.passes}  # the alternative each pass group chose
    for name, spec in (config.get("passes") or {}).items():
        params = dict(record.params.get(name, {}))
        passes[name] = {"type": ran.get(name, spec["type"]), **params}
    engine = {k: v for k, v in (config.get("engine") or {}).items() if k in ("execution_providers", "cache_dir", "evaluator")}
    engine["search_strategy"] = False
    engine["output_dir"] = str(Path(config.get("engine", {}).get("output_dir", "results/run")) / f"reproduce-trial-{record.number}")
    data_configs = []
    for data in config.get("data_configs") or []:
        data_configs.append({k: v for k, v in data.items()})
    return {
        "input_model": {k: v for k, v in (config.get("input_model") or {}).items() if v is not None},
        "data_configs": data_configs,
        "passes": passes,
        "evaluators": config.get("evaluators") or {},
        "engine": engine,
    }


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def model_card(view: Any, selection: Any, reproduce: dict[str, Any]) -> dict[str, Any]:
    from autotune.evaluation.base import environment

    record: TrialRecord = selection.record
    data_keys = {d["name"]: d.get("data_files") for d in view.config.get("data_configs", [])}
    return {
        "study": view.name,
        "trial": record.number,
        "model_key": record.model_key,
        "feasible": selection.feasible,
        "selection": {"policy": selection.policy, "rule": selection.rule, "missed_by": selection.missed_by},
        "parameters": record.params,
        "searched": record.point,
        "metrics": record.metrics,
        "baseline": view.baseline,
        "objectives": view.objectives,
        "constraints": view.bounds,
        "provider": view.provider,
        "environment": environment(),
        "data": data_keys,
        "config_sha256": config_hash(view.config),
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
    lines += ["", "## Environment", ""] + [f"- {k}: {v}" for k, v in card["environment"].items()]
    lines += ["", "## Reproduce", "", "Save the `reproduce_config` of `model_card.json` as a YAML/JSON file and run",
              "`autotune run --config FILE`: it rebuilds this model (same model key) with `search_strategy: false`.", ""]
    return "\n".join(lines)


def export_best(view: Any, selection: Any, output_dir: Path, *, rebuild: Any = None) -> Path | None:
    """Copy the selected trial's ONNX folder to ``output_dir/best`` and write the model card into it."""
    record = selection.record
    if record is None or record.model_key is None:
        return None
    cache_dir = Path(view.config.get("engine", {}).get("cache_dir", "cache"))
    from autotune.cache import Cache

    got = Cache(cache_dir).get(record.model_key)
    if got is None and rebuild is not None:
        log.info("trial %d's model is not in the cache; rebuilding it", record.number)
        got = rebuild(record)
    if got is None:
        log.warning("trial %d's model is no longer in the cache and cannot be rebuilt here", record.number)
        return None
    best = output_dir / "best"
    reproduce = reproduce_config(view.config, record)
    card = model_card(view, selection, reproduce)
    staging = output_dir / ".best.staging"
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(got[0], staging, copy_function=link_or_copy)
    write_json(staging / "model_card.json", card)
    (staging / "model_card.md").write_text(card_markdown(card))
    replace_dir(staging, best)
    return best
