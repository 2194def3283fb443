"""After a study: select, export ``best/``, and write the results folder — all from the storage."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from autotune.api import StudyResult
from autotune.runner import write_json
from autotune.selection import Selection, StudyView, pareto_set, select

log = logging.getLogger("autotune")


def load_study(storage_url: str, study_name: str | None = None) -> Any:
    import optuna

    from autotune.errors import ConfigError
    from autotune.search.study import open_storage, redact_url

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(storage_url)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage=storage)]
    if study_name is None:
        if len(names) != 1:
            raise ConfigError("--study", f"name the study (storage {redact_url(storage_url)} holds: {names or 'none'})")
        study_name = names[0]
    if study_name not in names:
        raise ConfigError("--study", f"no study '{study_name}' in {redact_url(storage_url)} (holds: {names or 'none'})")
    return optuna.load_study(study_name=study_name, storage=storage)


def write_results(view: StudyView, selection: Selection, report_dir: Path) -> dict[str, Path]:
    """trials.csv/.parquet, pareto.csv, selection.json, plots and report.html under ``report_dir``."""
    from autotune.report.frames import trials_frame

    report_dir.mkdir(parents=True, exist_ok=True)
    trials = trials_frame(view.records)
    pareto = trials_frame(pareto_set(view))
    files = {
        "trials.csv": report_dir / "trials.csv",
        "trials.parquet": report_dir / "trials.parquet",
        "pareto.csv": report_dir / "pareto.csv",
        "selection.json": report_dir / "selection.json",
    }
    _atomic(lambda p: trials.to_csv(p, index=False), files["trials.csv"])
    _atomic(lambda p: trials.to_parquet(p, index=False), files["trials.parquet"])
    _atomic(lambda p: pareto.to_csv(p, index=False), files["pareto.csv"])
    write_json(files["selection.json"], {
        "policy": selection.policy, "rule": selection.rule, "feasible": selection.feasible,
        "trial": selection.record.number if selection.record else None, "missed_by": selection.missed_by,
    })
    try:
        from autotune.report.html import write_report

        files.update(write_report(view, selection, trials, pareto, report_dir))
    except ImportError:  # pragma: no cover - report module optional while developing
        pass
    return files


def _atomic(write: Any, path: Path) -> None:
    import os
    import uuid

    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    write(tmp)
    os.replace(tmp, path)


def finish_study(cfg: Any, study: Any, *, storage_url: str, policy: str | None = None, min_accuracy: float | None = None,
                 latency_budget_ms: float | None = None) -> StudyResult:
    from autotune.export import export_best
    from autotune.report.frames import trials_frame

    view = StudyView.load(study)
    selection_cfg = cfg.engine.selection if cfg is not None else None
    if selection_cfg is not None:
        policy = policy or selection_cfg.policy
        min_accuracy = selection_cfg.min_accuracy if min_accuracy is None else min_accuracy
        latency_budget_ms = selection_cfg.latency_budget_ms if latency_budget_ms is None else latency_budget_ms
    selection = select(view, policy=policy or "max-accuracy", min_accuracy=min_accuracy, latency_budget_ms=latency_budget_ms,
                       weights=(selection_cfg.weights or None) if selection_cfg else None)
    output_dir = Path(view.config.get("engine", {}).get("output_dir", ".")) if cfg is None else cfg.engine.output_dir
    rebuild = _rebuilder(cfg) if cfg is not None else None
    best = export_best(view, selection, output_dir, rebuild=rebuild)
    write_results(view, selection, output_dir)
    best_info = None
    if selection.record is not None:
        best_info = {"trial": selection.record.number, "model_dir": str(best) if best else None, "feasible": selection.feasible,
                     "rule": selection.rule, "metrics": selection.record.metrics}
    return StudyResult(
        trials=trials_frame(view.records), pareto=trials_frame(pareto_set(view)), best=best_info, report_dir=output_dir,
        record={"study": view.name, "storage": storage_url, "selection": selection, "view": view},
    )


def _rebuilder(cfg: Any) -> Any:
    def rebuild(record: Any) -> Any:
        from autotune.cache import Cache
        from autotune.pipeline import Pipeline

        pipeline = Pipeline(cfg, cache=Cache(cfg.engine.cache_dir))
        result = pipeline.run(record.point)
        return pipeline.cache.get(result.model.key)

    return rebuild
