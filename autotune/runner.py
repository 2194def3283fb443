"""A single run (``search_strategy: false``): the passes once, then the model exported with a record."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from autotune.cache import Cache
from autotune.config.schema import RunConfig
from autotune.pipeline import Pipeline, PipelineObserver, PipelineResult

log = logging.getLogger("autotune")


LINK_MIN_BYTES = 1 << 20


def link_or_copy(source: str, target: str) -> None:
    # Weights are hard-linked from the cache (no copy of hundreds of MB; an edit in place is caught by
    # the cache's manifest check, and eviction leaves the link alive); small files such as
    # genai_config.json, which users do edit, are copied.
    if os.path.getsize(source) >= LINK_MIN_BYTES:
        try:
            os.link(source, target)
            return
        except OSError:  # another file system, or links not allowed
            pass
    shutil.copy2(source, target)


def atomic_copy_tree(source: Path, target: Path) -> None:
    """Copy a folder (weights linked) to ``target`` via a temp folder and a rename: no half-written result."""
    staging = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.tmp"
    shutil.copytree(source, staging, copy_function=link_or_copy)
    replace_dir(staging, target)


def replace_dir(staging: Path, target: Path) -> None:
    """Put a finished folder in the place of ``target`` by renames (the old one goes only after)."""
    if target.exists():
        old = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.old"
        os.rename(target, old)
        os.rename(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(staging, target)


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(value, indent=2, default=str))
    os.replace(tmp, path)


def evaluator_data(config: RunConfig) -> list[str]:
    """Names of the data configs the run's evaluator reads (resolved as the evaluator resolves them)."""
    if not config.engine.evaluator or config.engine.evaluator not in config.evaluators:
        return []
    from autotune.evaluation.runner import ModelEvaluator

    return ModelEvaluator(config, cache=None, data_loader=None).data_names()  # type: ignore[arg-type]


def run_single(config: RunConfig, *, observer: PipelineObserver | None = None) -> dict[str, Any]:
    """Run the passes once and write ``<output_dir>/model`` and ``<output_dir>/run.json``."""
    began = time.perf_counter()
    cache = Cache(config.engine.cache_dir)
    pipeline = Pipeline(config, cache=cache, observer=observer)
    pipeline.preflight(evaluator_data(config))
    result: PipelineResult = pipeline.run()
    out = config.engine.output_dir
    out.mkdir(parents=True, exist_ok=True)
    model_dir = out / "model"
    if result.model.kind == "onnx" or result.model.kind == "hf":
        atomic_copy_tree(result.model.path, model_dir)
    record: dict[str, Any] = {
        "input_model": {"path": str(result.input_model.path), "key": result.input_model.key},
        "provider": config.engine.provider,
        "model_key": result.model.key,
        "model_kind": result.model.kind,
        "model_dir": str(model_dir),
        "passes": [p.to_dict() for p in result.passes],
        "seconds": time.perf_counter() - began,
    }
    from autotune.evaluation.runner import evaluate_run

    metrics = evaluate_run(config, pipeline, result, model_dir)
    if metrics is not None:
        write_json(model_dir.parent / "metrics.json", metrics)
        record["metrics"] = metrics
    record["seconds"] = time.perf_counter() - began
    write_json(out / "run.json", record)
    return record
