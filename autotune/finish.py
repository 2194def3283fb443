"""After the trials: select, export ``best/`` (and a single run's ``model/``), write the results folder.

Reads the study storage alone (through :class:`StudyView`), so ``autotune select`` and ``report`` do
the same from any machine that can open the storage.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune.config.schema import RunConfig
from autotune.export import export_best
from autotune.fileio import atomic_copy_tree, write_json
from autotune.records import StudyView, TrialRecord
from autotune.report.results import write_results
from autotune.report.values import shown_metric
from autotune.result import Reselection, StudyResult
from autotune.search.storage import redact_url
from autotune.selection import Selection, pareto_set, select
from autotune.selection.pareto import remeasure_candidates

if TYPE_CHECKING:
    from autotune.run_context import RunContext

__all__ = ["finish", "rebuilder", "reselect", "selection_settings"]

log = logging.getLogger("autotune")


def selection_settings(view: StudyView, **given: Any) -> dict[str, Any]:
    """The selection settings given (not None), else the study config's ``engine.selection`` (the schema's defaults):
    every setting of :class:`autotune.config.schema.SelectionConfig` that :func:`autotune.selection.select` takes."""
    import inspect

    from autotune.config.schema import SelectionConfig
    from autotune.selection import select as select_trial

    configured = RunConfig.model_validate(view.meta.config).engine.selection if view.meta.config else SelectionConfig()
    taken = set(inspect.signature(select_trial).parameters) - {"view"}
    out = {name: getattr(configured, name) for name in SelectionConfig.model_fields if name in taken}
    out.pop("weights", None)  # folded into options
    given = {k: v for k, v in given.items() if v is not None}
    weights = given.pop("weights", None)
    # The configured options are the configured policy's: another policy given starts from none.
    same_policy = given.get("policy", configured.policy) == configured.policy
    out["options"] = {**(configured.given_options() if same_policy else {}), **given.pop("options", {}),
                      **({"weights": weights} if weights else {})}
    out.update(given)
    return out


def rebuilder(ctx: RunContext) -> Callable[[TrialRecord], tuple[Path, dict[str, Any]] | None]:
    """Rebuild a trial's model from its point through the pipeline (every pass from the cache where it can)."""

    def rebuild(record: TrialRecord) -> tuple[Path, dict[str, Any]] | None:
        result = ctx.pipeline.run(record.point)
        return ctx.cache.get(result.model.key)

    return rebuild


def finish(view: StudyView, *, ctx: RunContext, storage_url: str, output_dir: Path | None = None, **selection: Any) -> StudyResult:
    """Select, export and write every results file; a single run also gets ``model/``, run.json and metrics.json."""
    from autotune.search.final import evaluate_test, remeasure_latency

    output_dir = output_dir or view.meta.output_dir
    rebuild = rebuilder(ctx)
    if view.meta.mode == "search":
        settings = selection_settings(view, **selection)
        # Every trial whose latency could change the Pareto set, not only the set as measured during the study
        # (under --jobs, with contention): after the re-measure, pareto_set ranks by the re-measured values.
        remeasure_latency(view, ctx, remeasure_candidates(view), rounds=ctx.config.engine.selection.remeasure_rounds,
                          rebuild=rebuild)
    else:
        settings = {"policy": "max-accuracy"}
    chosen = select(view, **settings)
    finalists = {r.number: r for r in pareto_set(view)}
    if chosen.record is not None:
        finalists.setdefault(chosen.record.number, next(r for r in view.records if r.number == chosen.record.number))
    evaluate_test(view, ctx, list(finalists.values()), rebuild=rebuild)
    if chosen.record is not None:  # the chosen record is a copy (re-measured objectives): give it the test metrics
        chosen.record.test_metrics = finalists[chosen.record.number].test_metrics
    best = export_best(view, chosen, output_dir, cache=ctx.cache, rebuild=rebuild)
    write_results(view, chosen, output_dir)
    if view.meta.mode == "single" and chosen.record is not None and best is not None:
        _single_run_files(view, chosen, best, output_dir)
    best_info = None
    if chosen.record is not None:
        best_info = {"trial": chosen.record.number, "model_dir": str(best) if best else None, "feasible": chosen.feasible,
                     "rule": chosen.rule, "metrics": {k: m.model_dump(mode="json") for k in chosen.record.metrics
                                                      if (m := shown_metric(chosen.record, k)) is not None}}
    return StudyResult(best=best_info, report_dir=output_dir, view=view, selection=chosen, storage=redact_url(storage_url))


def reselect(view: StudyView, *, output_dir: Path, **selection: Any) -> Reselection:
    """Select again from the stored trials (the flags given replace the study config's ``engine.selection``), score a
    newly chosen trial on the test split once (as the study's finalists were), re-export ``best/`` and rewrite the
    results. Runs no trial; a model evicted from the cache is rebuilt from the study's config, and if it cannot be,
    nothing changes (the one-line error is raised before ``best/`` is touched)."""
    from autotune.records import StudyPrecision
    from autotune.run_context import RunContext
    from autotune.search.final import evaluate_test

    chosen = select(view, **selection_settings(view, **selection))
    ctx = RunContext(RunConfig.model_validate(view.meta.config))  # the schema's defaults, not ad-hoc ones
    ctx.pipeline.shared_precision = StudyPrecision(view.study)  # a rebuilt fine-tune trains as the study's did
    rebuild = rebuilder(ctx)
    if chosen.record is not None:
        stored = next(r for r in view.records if r.number == chosen.record.number)
        evaluate_test(view, ctx, [stored], rebuild=rebuild)
        chosen.record.test_metrics = stored.test_metrics
    best = export_best(view, chosen, output_dir, cache=ctx.cache, rebuild=rebuild)
    write_results(view, chosen, output_dir)
    return Reselection(selection=chosen, best=best, report_dir=output_dir)


def _single_run_files(view: StudyView, chosen: Selection, best: Path, output_dir: Path) -> None:
    """The files a single run has always written, beside the study's: ``model/``, run.json, metrics.json."""
    record = chosen.record
    assert record is not None
    atomic_copy_tree(best, output_dir / "model")
    write_json(output_dir / "run.json", {**record.model_dump(mode="json"), "model_dir": str(output_dir / "model"),
                                         "provider": view.provider})
    if record.metrics:
        bounds = view.bounds
        write_json(output_dir / "metrics.json", {
            "metrics": {k: m.model_dump(mode="json") for k, m in record.metrics.items()},
            "baseline": {k: m.model_dump(mode="json") for k, m in view.baseline.items()},
            "goals": [{"metric": b.metric, "bound": b.describe(), "met": b.violation(record.metrics[b.metric].value) <= 0}
                      for b in bounds if b.metric in record.metrics],
            "environment": view.meta.versions,
        })
