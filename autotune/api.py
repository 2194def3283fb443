"""The Python API: ``autotune.run(config) -> StudyResult``.

One flow for every run: load the config -> plan (the run context: cache, pipeline, evaluator) ->
study (a single run is a study of one point) -> finish (select, export ``best/``, write results).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autotune.config.schema import RunConfig
from autotune.config_checks import load_config
from autotune.pipeline import PipelineObserver
from autotune.result import StudyResult
from autotune.run_context import RunContext

__all__ = ["StudyResult", "run"]


def run(
    config: RunConfig | str | Path | dict[str, Any],
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    storage: str | None = None,
    fail_fast: bool = False,
    observer: PipelineObserver | None = None,
    jobs: int = 1,
) -> StudyResult:
    """Run a config: the passes once (``search_strategy: false``) or a study over its search space.
    ``jobs`` > 1 runs that many trials at once, in separate processes (:mod:`autotune.search.jobs`)."""
    import logging

    from autotune.finish import finish
    from autotune.records import StudyView
    from autotune.search.jobs import check_jobs, optimize_in_jobs
    from autotune.search.storage import redact_url
    from autotune.search.study import Study

    cfg = config if isinstance(config, RunConfig) else load_config(config)
    check_jobs(jobs, search=cfg.engine.search_strategy is not None)
    ctx = RunContext(cfg, observer=observer)
    study = Study(ctx, storage=storage, fail_fast=fail_fast, jobs=jobs)
    study.prepare()
    logging.getLogger("autotune").info("study %s in %s", study.name, redact_url(study.storage_url))
    if jobs == 1:
        study.optimize(n_trials=n_trials, timeout=timeout)
    else:
        optimize_in_jobs(study, jobs=jobs, n_trials=n_trials, timeout=timeout, fail_fast=fail_fast)
    result = finish(StudyView.load(study.study), ctx=ctx, storage_url=study.storage_url, output_dir=cfg.engine.output_dir)
    result.stopped_by = study.stopped_by
    return result
