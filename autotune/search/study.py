"""The study loop: storage, sampler, resume, workers. A single run is a study of one point.

``Study.prepare`` writes the :class:`StudyMeta` (objectives, bounds, baseline, config), builds the
sampler, queues grid points and the points of trials cut short; ``Study.optimize`` runs trials
(:mod:`autotune.search.trial`) until a rule of :mod:`autotune.search.stopping` says stop.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from autotune.device import device_info
from autotune.errors import ConfigError
from autotune.evaluation.base import EvalModel, environment
from autotune.evaluation.goals import Bound
from autotune.library_noise import dropped_messages, library_level
from autotune.records import (
    DataSummary,
    ObjectiveSpec,
    StudyMeta,
    StudyPrecision,
    TrialRecord,
    has_meta,
    read_meta,
    read_record,
    write_meta,
)
from autotune.search.baselines import base_infos, measure_baselines
from autotune.search.fingerprint import check_resume, study_fingerprint
from autotune.search.objectives import objectives_from
from autotune.search.recovery import checkable_here, fail_dead_owners, requeue_interrupted
from autotune.search.sampling import check_space_against_study, grid_points, interleave_prefixes, make_sampler, space_size
from autotune.search.stopping import Duplicates, StopRules, StudyProgress
from autotune.search.storage import default_storage, open_storage, redact_url, safe_name
from autotune.search.trial import TrialRunner
from autotune.warning_filters import ignored_warning

if TYPE_CHECKING:
    from autotune.run_context import RunContext

__all__ = ["Study", "collect_garbage"]

log = logging.getLogger("autotune")
WALL_TIME = ObjectiveSpec(metric="seconds.total", higher_is_better=False, unit="s", kind="other")


def stored_config(cfg: Any) -> dict[str, Any]:
    """The config as the study stores it: canonical, with any password in a URL redacted."""
    data = cfg.model_dump(mode="json")
    if data["engine"].get("storage"):
        data["engine"]["storage"] = redact_url(data["engine"]["storage"])
    return data


def in_optuna_scope(method: Callable[..., Any]) -> Callable[..., Any]:
    """Runs ``method`` in :func:`optuna_scope`."""

    @functools.wraps(method)
    def scoped(*args: Any, **kwargs: Any) -> Any:
        with optuna_scope():
            return method(*args, **kwargs)

    return scoped


@contextlib.contextmanager
def optuna_scope() -> Iterator[None]:
    """While the study works with Optuna: its INFO lines (a line per trial) are held back, and so is its
    warning of a failed trial, which the trial runner already reports once, with the path of its traceback
    (Optuna's would print the whole traceback again); the ExperimentalWarnings of the heartbeat and sampler
    options autotune chose are not shown. Afterwards Optuna's verbosity and the warning filters are as
    they were, also after an exception (only the one filter entry added here is taken out again)."""
    import optuna

    with library_level("optuna", logging.WARNING), dropped_messages("optuna.study._optimize", ("Trial ",)), \
            ignored_warning(optuna.exceptions.ExperimentalWarning):
        yield


class Study:
    """One config's study: its meta, sampler, stopping rules and trial loop."""

    def __init__(self, ctx: RunContext, *, storage: str | None = None, fail_fast: bool = False, jobs: int = 1) -> None:
        self.ctx = ctx
        self.cfg = ctx.config
        self.mode = "search" if self.cfg.engine.search_strategy is not None else "single"
        self.fail_fast = fail_fast
        self.jobs = jobs  # processes running this study's trials at once on this machine (run --jobs)
        self.storage_url = storage or self.cfg.engine.storage or ""  # "" -> SQLite under output_dir, once inputs are checked
        self.name = safe_name(self.cfg.engine.study_name or self.cfg.engine.output_dir.name)
        if self.storage_url:  # a bad URL is refused before any work
            self.storage = open_storage(self.storage_url, heartbeat_seconds=self.cfg.engine.heartbeat_seconds)
        self.evaluator = ctx.evaluator() if self.cfg.engine.evaluator else None
        self.meta = StudyMeta(mode=self.mode)
        self.grid: list[dict[str, Any]] | None = None
        self.bounds: list[Bound] = []
        self.base_bounds: dict[str, list[Bound]] = {}  # by base name, when the study searches the base model
        self.study: Any = None
        self.stopped_by: str | None = None
        self.unchanged = False  # a single run whose stored result stands (see _unchanged_single_run)

    # -- setting up -------------------------------------------------------------------------------
    def _objectives(self) -> list[ObjectiveSpec]:
        where = f"evaluators.{self.cfg.engine.evaluator}"
        if self.evaluator is None:
            if self.mode == "search":
                raise ConfigError("engine.evaluator", "a search needs an evaluator to compare trials")
            return [WALL_TIME]
        if self.mode == "single" and not any(s.priority > 0 for s in self.evaluator.specs):
            return [WALL_TIME]
        return objectives_from(self.evaluator.specs, where=where)

    def _check_selection(self, objectives: list[ObjectiveSpec]) -> None:
        """Refuse, before any trial, a selection setting that the study's objectives cannot honour."""
        selection = self.cfg.engine.selection
        kinds = {o.kind for o in objectives}
        if selection.latency_budget_ms is not None and "latency" not in kinds:
            raise ConfigError("engine.selection.latency_budget_ms", "the evaluator has no latency objective to apply it to")
        if selection.min_accuracy is not None and "accuracy" not in kinds:
            raise ConfigError("engine.selection.min_accuracy", "the evaluator has no accuracy objective to apply it to")

    def _create(self, directions: list[str], sampler: Any) -> Any:
        import optuna

        study = optuna.create_study(storage=self.storage, study_name=self.name, directions=directions, sampler=sampler,
                                    load_if_exists=True)
        if self.mode == "single" and study.trials:
            # A single run replaces its previous result; a search study in that place is never touched.
            if read_meta(study).mode != "single":
                raise ConfigError("engine.output_dir", f"study '{self.name}' in {redact_url(self.storage_url)} is a search; "
                                  "set engine.study_name or engine.output_dir for this single run")
            optuna.delete_study(study_name=self.name, storage=self.storage)
            study = optuna.create_study(storage=self.storage, study_name=self.name, directions=directions, sampler=sampler)
        if [d.name.lower() for d in study.directions] != directions:
            raise ConfigError("evaluators", f"study '{self.name}' exists with other objectives; "
                              "set engine.study_name to start a new one")
        return study

    @in_optuna_scope
    def prepare(self) -> Any:
        objectives = self._objectives()
        if self.mode == "search":
            self._check_selection(objectives)
        self.ctx.preflight()
        if not self.storage_url:  # only now: a refused run leaves no output folder behind
            self.storage_url = default_storage(self.cfg.engine.output_dir)
            self.storage = open_storage(self.storage_url, heartbeat_seconds=self.cfg.engine.heartbeat_seconds)
        fingerprint = study_fingerprint(self.ctx)
        if self.mode == "search":  # before any work: trials scored otherwise are not added to this study
            fingerprint = check_resume(self.storage, self.name, fingerprint, config=self.cfg)  # what the study keeps
        else:
            unchanged = self._unchanged_single_run(fingerprint)
            if unchanged is not None:  # nothing to run, measure or store again: finish reads it as it is
                self.study, self.meta, self.unchanged = unchanged, read_meta(unchanged), True
                self.bounds = list(self.meta.bounds)
                return unchanged
        measured = measure_baselines(self.ctx, self.evaluator)
        baseline, reference, baseline_kind = measured.baseline, measured.reference, measured.kind
        self.bounds = self.evaluator.bounds(baseline) if self.evaluator is not None else []
        if self.evaluator is not None:  # a trial's relative goals are against its own base's baseline
            self.base_bounds = {name: self.evaluator.bounds(b) for name, b in measured.per_base.items()}
        sampler, enqueue = make_sampler(self.cfg, self.ctx.pipeline.slots, len(self.bounds))
        study = self._create([o.direction for o in objectives], sampler)
        self.ctx.pipeline.shared_precision = StudyPrecision(study)  # one training precision per study and machine class
        check_space_against_study(self.ctx.pipeline.slots, study, self.name)
        previous = read_meta(study) if has_meta(study) else None
        study.set_metric_names([o.metric for o in objectives])
        self.meta = StudyMeta(
            mode=self.mode, objectives=objectives,
            bounds=list(self.bounds),
            baseline={k: v for k, v in (baseline or {}).items()},
            baseline_kind=baseline_kind,
            baseline_reference={k: v for k, v in (reference or {}).items()},
            data=self._data_summaries(),
            config=stored_config(self.cfg), provider=self.cfg.engine.provider, versions=environment(),
            device=device_info(self.ctx.pipeline.device), grid_enqueued=bool(previous and previous.grid_enqueued),
            fingerprint=fingerprint, bases=base_infos(self.cfg),
            base_baselines={name: {k: v for k, v in b.items()}
                            for name, b in measured.per_base.items()},
            base_bounds={name: list(bounds) for name, bounds in self.base_bounds.items()},
        )
        if enqueue and self.jobs > 1:
            enqueue = interleave_prefixes(enqueue, self.ctx.pipeline.slots)
        if enqueue:
            # Every grid point no trial holds yet: a second worker finds them queued, and a grid that
            # grew (a value added to a list) gets its new points (skip_if_exists: none twice).
            held = {tuple(sorted(t.params.items())) for t in study.get_trials(deepcopy=False)}
            for point in enqueue:
                if tuple(sorted(point.items())) not in held:
                    study.enqueue_trial(point, skip_if_exists=True)
            self.meta.grid_enqueued = True
        write_meta(study, self.meta)
        self.grid = enqueue or None
        fail_dead_owners(study)
        requeue_interrupted(study)
        self.study = study
        return study

    def _unchanged_single_run(self, fingerprint: Any) -> Any:
        """The single run's stored study when running it again would store the same: one completed trial,
        the same config, data, evaluator and library versions, and its model (the same cache key this config
        gives now) still in the cache. None otherwise (the run replaces the study as before)."""
        import optuna
        from optuna.trial import TrialState

        try:
            study = optuna.load_study(study_name=self.name, storage=self.storage)
        except KeyError:
            return None
        trials = study.get_trials(deepcopy=False)
        if not has_meta(study) or len(trials) != 1 or trials[0].state != TrialState.COMPLETE:
            return None
        previous = read_meta(study)
        if (previous.mode != "single" or previous.fingerprint != fingerprint or previous.config != stored_config(self.cfg)
                or previous.versions != environment() or previous.provider != self.cfg.engine.provider):
            return None
        record = read_record(trials[0])
        chain = self.ctx.pipeline.keys(record.point)
        got = self.ctx.cache.get(record.model_key) if chain and record.model_key == chain[-1].key else None
        if got is None:
            return None
        if self.evaluator is not None:  # each metric measured as this evaluator measures now (its type's version too)
            model = EvalModel.from_folder(got[0], key=record.model_key)
            if not self.evaluator.all_cached(model):
                return None
        log.info("single run unchanged (same config, data, libraries and model): its stored result is reused")
        return study

    @in_optuna_scope
    def join(self, *, job: int) -> Any:
        """Join the study another process of this run prepared (``run --jobs``): its objectives, bounds
        and baseline as stored, nothing measured again; ``job`` offsets the sampler's seed."""
        import optuna

        study = optuna.load_study(study_name=self.name, storage=self.storage)
        self.ctx.pipeline.shared_precision = StudyPrecision(study)
        self.meta = read_meta(study)
        self.bounds = list(self.meta.bounds)
        self.base_bounds = {name: list(bounds) for name, bounds in self.meta.base_bounds.items()}
        study.sampler, enqueue = make_sampler(self.cfg, self.ctx.pipeline.slots, len(self.bounds), job=job)
        self.grid = enqueue or None
        self.study = study
        return study

    def _data_summaries(self) -> dict[str, DataSummary]:
        out = {}
        for name in self.ctx.pipeline.data_names():
            data = self.ctx.pipeline.data(name)
            out[name] = DataSummary(train=len(data.train), validation=len(data.eval), test=len(data.test),
                                    template=data.template.text, prompt_template=data.template.prompt_text,
                                    labels=data.labels, files=[str(f) for f in data.files],
                                    example=_example(data), terminator=data.template.terminator,
                                    chat=data.template.chat, system_prompt=data.template.system_prompt)
        return out

    # -- running ----------------------------------------------------------------------------------
    def _rules(self, n_trials: int | None, timeout: float | None) -> StopRules:
        strategy = self.cfg.engine.search_strategy
        if strategy is None:
            return StopRules(n_trials=1)
        return StopRules(
            n_trials=n_trials, max_samples=strategy.max_samples, grid=self.grid is not None,
            goals=strategy.stop_when_goals_met and bool(self.bounds), fail_fast=self.fail_fast,
            time_budget=timeout if timeout is not None else strategy.max_time,
        )

    def _trial_runner(self) -> TrialRunner:
        strategy = self.cfg.engine.search_strategy
        early_stop = self._opt_out_rule(strategy.early_stop if strategy is not None else None)
        space = grid_points(self.ctx.pipeline.slots) if self.mode == "search" and space_size(self.ctx.pipeline.slots) else None
        duplicates = Duplicates(space, seed=strategy.seed) if space and strategy is not None else None
        observer = self.ctx.observer
        say = observer.message if observer is not None and hasattr(observer, "message") else log.info
        runner = TrialRunner(self.ctx, objectives=self.meta.objectives, bounds=self.bounds, early_stop=early_stop,
                             log_dir=self.cfg.engine.output_dir / "logs", duplicates=duplicates, say=say,
                             base_bounds=self.base_bounds)
        fidelity = self._opt_out_rule(strategy.multi_fidelity if strategy is not None else None)
        if fidelity is not None and runner.evaluator is not None:
            from autotune.search.fidelity import FidelityRule

            runner.fidelity = FidelityRule(self.ctx, runner.evaluator, fidelity, self.meta.objectives)
        return runner

    def _opt_out_rule(self, setting: Any) -> Any:
        """An early-stopping or multi-fidelity setting if it applies, else None: off when disabled, and
        off for a grid (whose point is to measure every point fully) unless ``enabled`` was set."""
        if setting is None or not setting.enabled:
            return None
        if self.grid is not None and "enabled" not in setting.model_fields_set:
            return None
        return setting

    def _run_trials(self, runner: TrialRunner, rules: StopRules) -> None:
        # A single run's failure is the run's: it propagates (its traceback also kept in the trial's log).
        catch = (Exception,) if self.mode == "search" else ()
        self.study.optimize(runner, n_trials=None, timeout=None, catch=catch, callbacks=[rules, collect_garbage],
                            gc_after_trial=False)  # collect_garbage does it, without rescanning the import-time heap

    @in_optuna_scope
    def optimize(self, *, n_trials: int | None = None, timeout: float | None = None) -> None:
        from optuna.storages import fail_stale_trials

        if self.unchanged:
            return
        study = self.study
        fail_stale_trials(study)  # a worker killed earlier elsewhere: fail its trial now (and queue its retry)
        rules = self._rules(n_trials, timeout)
        idle = rules.nothing_to_do(study)
        if idle is not None and self.mode == "search":
            log.info("study %s: %s", self.name, idle)
            return
        runner = self._trial_runner()
        if self.mode == "search":
            runner.progress = StudyProgress(rules.planned(study), rules.deadline)
        frozen_before = gc.get_freeze_count()
        try:
            self._run_trials(runner, rules)
            if runner.user_error is None and self.mode == "search":
                self._wait_for_silent_trials(runner, rules)
        finally:
            if not frozen_before:
                gc.unfreeze()  # the caller's process gets its collector back as it was
        self.stopped_by = rules.reason
        if runner.user_error is not None:
            raise runner.user_error

    def _wait_for_silent_trials(self, runner: TrialRunner, rules: StopRules) -> None:
        """Trials RUNNING under an owner this process cannot check (another host or PID namespace, or
        none recorded): wait up to the heartbeat's grace period, then retry those whose heartbeat went stale."""
        from optuna.storages import fail_stale_trials
        from optuna.trial import TrialState

        def silent() -> list[TrialRecord]:
            out = []
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                r = read_record(t)
                if r.owner is None or not checkable_here(r.owner):
                    out.append(r)
            return out

        waiting = silent()
        if not waiting or (rules.n_trials is not None and rules.started >= rules.n_trials):
            return
        grace = 3 * self.cfg.engine.heartbeat_seconds
        log.info("trial(s) %s still RUNNING elsewhere: waiting up to %.0f s for their heartbeat",
                 [r.number for r in waiting], grace + self.cfg.engine.heartbeat_seconds)
        deadline = time.monotonic() + grace + self.cfg.engine.heartbeat_seconds
        while time.monotonic() < deadline and silent():
            time.sleep(min(self.cfg.engine.heartbeat_seconds, max(0.1, deadline - time.monotonic())))
            if fail_stale_trials(self.study) or self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                self._run_trials(runner, rules)
        left = silent()
        if left:
            log.info("trial(s) %s are alive on another worker (fresh heartbeat): not waiting for them", [r.number for r in left])


def _example(data: Any) -> str:
    """The input text of the first training row, when the template has a single input column."""
    inputs = [c for c in data.template.columns if c != data.template.answer_column]
    return str(data.train[0].get(inputs[0], "")) if data.train and len(inputs) == 1 else ""


def collect_garbage(study: Any, trial: Any) -> None:
    """After each trial, free the reference cycles a trial leaves (models, trainers) at once.

    A full collection walks every live object, and torch, transformers and peft leave millions after
    import: 0.47 s per trial here. After the first trial the survivors (modules, the study) are frozen
    out of later collections, which then walk only what later trials allocate.
    """
    gc.collect()
    if not gc.get_freeze_count():
        gc.freeze()
