"""The Python API: ``autotune.run(config) -> StudyResult``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autotune.config.loader import load_config
from autotune.config.schema import RunConfig
from autotune.pipeline import PipelineObserver


@dataclass
class StudyResult:
    """What a run produced: the trials table, the Pareto set, the selected model and the report folder."""

    trials: Any  # pandas.DataFrame, one row per trial
    pareto: Any  # pandas.DataFrame, the feasible non-dominated trials
    best: dict[str, Any] | None
    report_dir: Path
    record: dict[str, Any] = field(default_factory=dict)

    def print_summary(self) -> None:
        from autotune.report.console import print_summary

        print_summary(self)


def run(
    config: RunConfig | str | Path | dict[str, Any],
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    storage: str | None = None,
    fail_fast: bool = False,
    observer: PipelineObserver | None = None,
) -> StudyResult:
    """Run a config: the passes once (``search_strategy: false``) or a study over its search space."""
    cfg = config if isinstance(config, RunConfig) else load_config(config)
    if cfg.engine.search_strategy is None:
        import pandas as pd

        from autotune.runner import run_single

        record = run_single(cfg, observer=observer)
        row = {"number": 0, "state": "COMPLETE", "model_key": record["model_key"]}
        for p in record["passes"]:
            row[f"seconds.{p['name']}"] = p["seconds"]
            row[f"cache_hit.{p['name']}"] = p["cache_hit"]
        trials = pd.DataFrame([row])
        best = {"model_dir": record["model_dir"], "model_key": record["model_key"], "metrics": record.get("metrics")}
        return StudyResult(trials=trials, pareto=trials, best=best, report_dir=cfg.engine.output_dir, record=record)
    from autotune.search.study import run_study

    return run_study(cfg, n_trials=n_trials, timeout=timeout, storage=storage, fail_fast=fail_fast, observer=observer)
