"""The Python API: what every ``autotune`` command does, as functions (the CLI only parses and prints).

One flow for every run: load the config -> plan (the run context: cache, pipeline, evaluator) ->
study (a single run is a study of one point) -> finish (select, export ``best/``, write results).
A study's results are read back from its storage alone: :func:`open_study`, then :func:`select`,
:func:`report` or :func:`trials` from any machine that can open it.

Every function raises :class:`autotune.UserError` (a config key, a file, a value) for the caller's mistakes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune.config.schema import RunConfig
from autotune.config_checks import load_config
from autotune.pipeline import PipelineObserver
from autotune.records import StudyView
from autotune.result import Reselection, StudyResult
from autotune.run_context import RunContext

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Evaluation", "Reselection", "StudyResult", "StudyView", "evaluate", "open_study", "report", "run", "select",
           "trials", "validate"]

ConfigSource = RunConfig | str | Path | dict[str, Any]


def _config(config: ConfigSource) -> RunConfig:
    return config if isinstance(config, RunConfig) else load_config(config)


def run(
    config: ConfigSource,
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
    from autotune.search.jobs import check_jobs, optimize_in_jobs
    from autotune.search.storage import redact_url
    from autotune.search.study import Study

    cfg = _config(config)
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


def validate(config: ConfigSource) -> RunConfig:
    """Check a config without running it: its schema and cross-checks, every data config read and templated, what the
    metrics read outside the config (lm-eval tasks and their data), each Hugging Face model id (in the cache, or looked
    up on the Hub, never downloaded). Nothing is written. Returns the parsed config."""
    from autotune.config_checks import check_data_configs, check_metric_inputs, validate_models

    cfg = _config(config)
    check_data_configs(cfg)
    check_metric_inputs(cfg)
    validate_models(cfg)
    return cfg


@dataclass(frozen=True)
class Evaluation:
    """One model folder measured with a config's evaluator: ``record`` holds ``metrics``, ``baseline`` (the input
    model's, when asked for), ``goals`` (each bound and whether it is met) and ``environment`` (versions, machine)."""

    model: Path
    provider: str
    record: dict[str, Any] = field(default_factory=dict)


def evaluate(config: ConfigSource, model: str | Path, *, baseline: bool = True, evaluator: str | None = None,
             use_cache: bool = True) -> Evaluation:
    """Measure ``model`` (an ONNX genai folder or a Hugging Face folder) with the config's evaluator (or the one named
    ``evaluator``), and the config's input model beside it unless ``baseline`` is false (then goals relative to the
    baseline cannot be resolved and only the absolute ones are checked)."""
    from autotune.evaluation.base import EvalModel
    from autotune.evaluation.runner import metrics_record

    cfg = _config(config)
    ctx = RunContext(cfg)
    runner = ctx.evaluator(evaluator, use_cache=use_cache)
    folder = Path(model).resolve()
    metrics = runner.evaluate(EvalModel.from_folder(folder))
    base = None
    if baseline:
        source = ctx.pipeline.input_model()
        base = runner.evaluate(EvalModel(path=source.path, kind="hf", key=source.key))
    bounds = runner.bounds(base) if base is not None else runner.bounds(None, relative=False)
    return Evaluation(model=folder, provider=cfg.engine.provider, record=metrics_record(metrics, base, bounds))


def open_study(results: str | Path | None = None, *, storage: str | None = None, study: str | None = None) -> StudyView:
    """A stored study: from its results folder (holding ``study.db``) or a storage URL (``study``: its name, needed
    when the storage holds several)."""
    from autotune.errors import ConfigError
    from autotune.search.storage import load_study

    if storage is None:
        if results is None:
            raise ConfigError("RESULTS_DIR", "give a results folder or --storage URL")
        db = Path(results) / "study.db"
        if not db.is_file():
            raise ConfigError(str(results), "no study.db here (give the study's results folder or --storage URL)")
        storage = f"sqlite:///{db.resolve()}"
    return StudyView.load(load_study(storage, study))


def _view_and_folder(results: str | Path | None, storage: str | None, study: str | None) -> tuple[StudyView, Path]:
    view = open_study(results, storage=storage, study=study)
    return view, Path(results) if results is not None else view.meta.output_dir


def select(results: str | Path | None = None, *, storage: str | None = None, study: str | None = None,
           policy: str | None = None, min_accuracy: float | None = None, latency_budget_ms: float | None = None,
           options: dict[str, Any] | None = None, weights: dict[str, float] | None = None,
           prefer_cheaper: bool | None = None) -> Reselection:
    """Select again and re-export ``best/`` without rerunning any trial; settings given replace the study config's
    ``engine.selection``, the rest keep its values (:func:`autotune.finish.reselect`). ``options``: the policy's own
    settings (``engine.selection.options``; the configured ones are kept only for the configured policy)."""
    from autotune.finish import reselect

    view, folder = _view_and_folder(results, storage, study)
    return reselect(view, output_dir=folder, policy=policy, min_accuracy=min_accuracy, latency_budget_ms=latency_budget_ms,
                    options=options or None, weights=weights or None, prefer_cheaper=prefer_cheaper)


def report(results: str | Path | None = None, *, storage: str | None = None, study: str | None = None,
           policy: str | None = None) -> dict[str, Path]:
    """Rebuild every results file (tables, plots, report.html) from the study storage alone; name -> path."""
    from autotune.finish import selection_settings
    from autotune.report.results import write_results
    from autotune.selection import select as select_trial

    view, folder = _view_and_folder(results, storage, study)
    return write_results(view, select_trial(view, **selection_settings(view, policy=policy)), folder)


def trials(results: str | Path | None = None, *, storage: str | None = None, study: str | None = None) -> pd.DataFrame:
    """The study's trials, one row per trial (the columns of ``trials.csv``)."""
    from autotune.report.frames import trials_frame

    return trials_frame(open_study(results, storage=storage, study=study).records)
