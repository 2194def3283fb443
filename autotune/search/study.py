"""The Optuna study: storage, sampler, resume, workers, and the objective that runs one trial."""

from __future__ import annotations

import gc
import logging
import math
import re
import time
from pathlib import Path
from typing import Any

from autotune.cache import Cache
from autotune.config.schema import RunConfig
from autotune.context import TrialTimeout
from autotune.errors import ConfigError, UserError
from autotune.evaluation.base import EvalModel
from autotune.evaluation.goals import Bound
from autotune.evaluation.runner import ModelEvaluator
from autotune.pipeline import Pipeline, PipelineObserver
from autotune.plan import resolve
from autotune.search.early_stop import MedianRule, TrialStopped
from autotune.search.objectives import CONSTRAINTS_ATTR, ConstraintsFunc, Objective, constraint_values, objectives_from
from autotune.search.records import RECORD_ATTR, PassSummary, TrialRecord
from autotune.search.sampling import grid_points, space_size, suggest_point

log = logging.getLogger("autotune")
BASELINE_ATTR = "autotune_baseline"
INTERRUPTED = "interrupted (Ctrl-C): queued again for the next run"


def requeue_interrupted(study: Any) -> list[dict[str, Any]]:
    """Queue again the points of trials a Ctrl-C (or a crash before their record was final) cut
    short, unless the point already has a live or finished trial: a resumed study redoes them."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    settled = {tuple(sorted(t.params.items())) for t in trials
               if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.WAITING, TrialState.RUNNING)}
    queued = []
    for trial in trials:
        if trial.state != TrialState.FAIL or not trial.params:
            continue
        record = trial.user_attrs.get(RECORD_ATTR) or {}
        cut_short = record.get("fail_reason") in (None, INTERRUPTED) and record.get("state") in ("RUNNING", "FAIL")
        point = tuple(sorted(trial.params.items()))
        if cut_short and point not in settled:
            study.enqueue_trial(dict(trial.params), skip_if_exists=False)
            settled.add(point)
            queued.append(dict(trial.params))
    if queued:
        log.info("queued again %d point(s) of trial(s) cut short earlier", len(queued))
    return queued


def safe_name(text: str) -> str:
    """A study/file name with no path tricks: letters, digits, '-', '_' and '.' only, no leading dots."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip(".-") or "study"
    return name[:100]


def default_storage(output_dir: Path) -> str:
    output_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(output_dir / 'study.db').resolve()}"


def redact_url(url: str) -> str:
    """The storage URL with any password hidden (for logs, reports and cards)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def open_storage(url: str, *, heartbeat_seconds: float = 20) -> Any:
    import warnings

    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

    if "://" not in url:
        raise ConfigError("engine.storage", f"expected a storage URL such as sqlite:///study.db, got \"{redact_url(url)}\"")
    try:
        return RDBStorage(
            url,
            heartbeat_interval=max(1, round(heartbeat_seconds)),
            grace_period=max(2, round(3 * heartbeat_seconds)),
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
            # SQLite: several workers on one host wait for the write lock instead of failing.
            engine_kwargs={"pool_pre_ping": True, **({"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {})},
        )
    except (optuna.exceptions.StorageInternalError, ImportError, Exception) as exc:
        raise ConfigError("engine.storage", f"cannot open {redact_url(url)}: {str(exc).splitlines()[0][:200]}") from None


def make_sampler(cfg: RunConfig, pipeline: Pipeline, n_objectives: int, n_constraints: int) -> tuple[Any, list[dict[str, Any]]]:
    """The Optuna sampler for ``engine.search_strategy.sampler`` and any points to enqueue first."""
    import optuna

    strategy = cfg.engine.search_strategy
    assert strategy is not None
    name = strategy.sampler
    constraints = ConstraintsFunc(n_constraints) if n_constraints else None
    if name == "auto":
        size = space_size(pipeline.slots)
        name = "grid" if size is not None and size <= (strategy.max_samples or size) else "tpe"
        log.info("sampler auto: %s (space of %s points)", name, size if size is not None else "continuous")
    if name == "grid":
        # Enqueue each distinct valid point (conditional parameters left out) and let a random
        # sampler fill anything else: no duplicated or invalid grid points.
        return optuna.samplers.RandomSampler(seed=strategy.seed), grid_points(pipeline.slots)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=strategy.seed), []
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=strategy.seed, constraints_func=constraints), []
    if name == "gp":
        return optuna.samplers.GPSampler(seed=strategy.seed, constraints_func=constraints), []
    return optuna.samplers.TPESampler(seed=strategy.seed, multivariate=True, group=True, constraints_func=constraints,
                                      n_startup_trials=min(5, strategy.max_samples or 5)), []


class StudyRunner:
    """Owns a study for one config: baseline, objective, and stopping rules."""

    def __init__(self, cfg: RunConfig, *, storage: str | None = None, observer: PipelineObserver | None = None,
                 fail_fast: bool = False) -> None:
        import warnings

        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        self.cfg = cfg
        self.strategy = cfg.engine.search_strategy
        assert self.strategy is not None
        self.observer = observer
        self.fail_fast = fail_fast
        self.cache = Cache(cfg.engine.cache_dir)
        self.pipeline = Pipeline(cfg, cache=self.cache, observer=observer)
        from autotune.runner import evaluator_data

        self.pipeline.preflight(evaluator_data(cfg))
        self.evaluator = ModelEvaluator(cfg, cache=self.cache, data_loader=self.pipeline.data)
        self.objectives: list[Objective] = objectives_from(self.evaluator.specs, where=f"evaluators.{self.evaluator.name}")
        self.storage_url = storage or cfg.engine.storage or default_storage(cfg.engine.output_dir)
        self.study_name = safe_name(cfg.engine.study_name or cfg.engine.output_dir.name)
        self.storage = open_storage(self.storage_url, heartbeat_seconds=cfg.engine.heartbeat_seconds)
        self.baseline: dict[str, Any] | None = None
        self.bounds: list[Bound] = []
        self.user_error: UserError | None = None
        self.grid_size: int | None = None

    def prepare(self) -> Any:
        import optuna

        if self.cfg.engine.evaluate_input_model or any(s.goal and s.goal.type != "threshold" for s in self.evaluator.specs):
            source = self.pipeline.input_model()
            log.info("evaluating the baseline (input model, PyTorch)")
            self.baseline = self.evaluator.evaluate(EvalModel(path=source.path, kind="hf", key=source.key))
        self.bounds = self.evaluator.bounds(self.baseline)
        sampler, enqueue = make_sampler(self.cfg, self.pipeline, len(self.objectives), len(self.bounds))
        study = optuna.create_study(
            storage=self.storage,
            study_name=self.study_name,
            directions=[o.direction for o in self.objectives],
            sampler=sampler,
            load_if_exists=True,
        )
        existing = study.directions
        if [d.name.lower() for d in existing] != [o.direction for o in self.objectives]:
            raise ConfigError(
                "evaluators", f"study '{self.study_name}' exists with other objectives; set engine.study_name to start a new one"
            )
        study.set_metric_names([o.metric for o in self.objectives])
        study.set_user_attr("objectives", [o.__dict__ for o in self.objectives])
        study.set_user_attr("bounds", [{"metric": b.metric, "value": b.value, "higher_is_better": b.higher_is_better, "goal": b.goal}
                                       for b in self.bounds])
        study.set_user_attr("provider", self.cfg.engine.provider)
        study.set_user_attr("config", self.cfg.model_dump(mode="json"))
        if self.baseline is not None:
            study.set_user_attr(BASELINE_ATTR, {k: v.to_dict() for k, v in self.baseline.items()})
        if enqueue and not study.user_attrs.get("grid_enqueued"):
            # Once per study: a second worker finds the points already queued (skip_if_exists
            # covers two workers starting in the same instant).
            for point in enqueue:
                study.enqueue_trial(point, skip_if_exists=True)
            study.set_user_attr("grid_enqueued", True)
        self.grid_size = len(enqueue) if enqueue else None
        requeue_interrupted(study)
        return study

    # -- one trial --------------------------------------------------------------------------------
    def objective(self, trial: Any) -> tuple[float, ...]:
        began = time.perf_counter()
        record = TrialRecord(number=trial.number)
        point = suggest_point(trial, self.pipeline.slots)
        record.point = point
        record.params = {s.name: s.params(point).resolved() for s in resolve(self.pipeline.slots, point)}
        self._save(trial, record)
        self._say(f"trial {trial.number}: " + ", ".join(f"{k}={v}" for k, v in point.items()))
        timeout = self.cfg.engine.trial_timeout
        deadline = time.monotonic() + timeout if timeout else None
        stop_config = self.strategy.early_stop
        if self.grid_size is not None and "enabled" not in stop_config.model_fields_set:
            stop_config = stop_config.model_copy(update={"enabled": False})  # unless the user asked for it
        rule = MedianRule(stop_config, trial.study, trial)

        def report(step: int, loss: float) -> None:
            if not math.isfinite(loss):
                return
            rule.report(step, loss)

        try:
            result = self.pipeline.run(point, report_intermediate=report, deadline=deadline)
            record.passes = [PassSummary(name=p.name, type=p.type, key=p.key, seconds=p.seconds, cache_hit=p.cache_hit)
                             for p in result.passes]
            record.model_key = result.model.key
            if deadline and time.monotonic() > deadline:
                raise TrialTimeout(f"trial_timeout={timeout:g} s exceeded after the passes")
            eval_began = time.perf_counter()
            metrics = self.evaluator.evaluate(EvalModel(path=result.model.path, kind=result.model.kind, key=result.model.key))
            record.evaluation_seconds = time.perf_counter() - eval_began
        except TrialStopped as stop:
            import optuna

            record.state, record.prune_reason = "PRUNED", stop.reason
            self._finish(trial, record, began)
            self._say(f"trial {trial.number}: stopped early: {stop.reason}")
            raise optuna.TrialPruned(stop.reason) from None
        except KeyboardInterrupt:
            record.state, record.fail_reason = "FAIL", INTERRUPTED
            self._finish(trial, record, began)
            raise
        except UserError as exc:
            # The user's to fix, not the trial's fault: record it, stop the study, and queue the
            # point again so that the same command resumes with it once fixed (e.g. disk space).
            record.state, record.fail_reason = "FAIL", f"{type(exc).__name__}: {exc}"
            self._finish(trial, record, began)
            trial.study.enqueue_trial(point, skip_if_exists=False)
            self.user_error = exc
            trial.study.stop()
            raise
        except Exception as exc:
            record.state = "FAIL"
            record.fail_reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
            self._finish(trial, record, began)
            trial.set_user_attr("fail_reason", record.fail_reason)
            self._say(f"trial {trial.number}: failed: {record.fail_reason}")
            raise
        values = {k: m.value for k, m in metrics.items()}
        record.metrics = {k: m.to_dict() for k, m in metrics.items()}
        record.objectives = {o.metric: values[o.metric] for o in self.objectives}
        record.constraints = constraint_values(self.bounds, values)
        record.feasible = all(v <= 0 for v in record.constraints.values())
        record.state = "COMPLETE"
        trial.set_user_attr(CONSTRAINTS_ATTR, [record.constraints[b.metric] for b in self.bounds])
        self._finish(trial, record, began)
        summary = ", ".join(f"{o.metric}={values[o.metric]:.4g}" for o in self.objectives)
        self._say(f"trial {trial.number}: {summary}{'' if record.feasible else ' (infeasible)'} in {record.seconds:.1f} s")
        return tuple(record.objectives[o.metric] for o in self.objectives)

    def _finish(self, trial: Any, record: TrialRecord, began: float) -> None:
        record.seconds = time.perf_counter() - began
        work = sum(p.seconds for p in record.passes) + record.evaluation_seconds
        record.orchestration_seconds = max(0.0, record.seconds - work)
        self._save(trial, record)

    @staticmethod
    def _save(trial: Any, record: TrialRecord) -> None:
        trial.set_user_attr(RECORD_ATTR, record.model_dump(mode="json"))

    def _say(self, text: str) -> None:
        if self.observer is not None and hasattr(self.observer, "message"):
            self.observer.message(text)
        else:
            log.info(text)

    # -- the loop ---------------------------------------------------------------------------------
    def optimize(self, study: Any, *, n_trials: int | None, timeout: float | None) -> None:
        from optuna.storages import fail_stale_trials
        from optuna.study import MaxTrialsCallback
        from optuna.trial import TrialState

        fail_stale_trials(study)  # a worker killed earlier: fail its trial now (and queue its retry)
        callbacks: list[Any] = []
        max_samples = self.strategy.max_samples
        if self.grid_size is not None:
            # A grid runs its queued points (and any queued again after a disk-full stop), and no others.
            waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
            if waiting == 0:
                log.info("study %s: every grid point has run", self.study_name)
                return

            def stop_when_queue_empty(study: Any, trial: Any) -> None:
                if not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                    study.stop()

            callbacks.append(stop_when_queue_empty)
            if n_trials is None and max_samples:
                done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
                waiting = min(waiting, max(0, max_samples - done))
                if waiting == 0:
                    log.info("study %s already has %d finished trials (max_samples %d)", self.study_name, done, max_samples)
                    return
            n_trials = waiting if n_trials is None else min(n_trials, waiting)
            max_samples = None
        if n_trials is None and max_samples:
            # max_samples bounds the study as a whole (all workers, all reruns).
            callbacks.append(MaxTrialsCallback(max_samples, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)))
            done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)))
            if done >= max_samples:
                log.info("study %s already has %d finished trials (max_samples %d)", self.study_name, done, max_samples)
                return
        if self.strategy.stop_when_goals_met and self.bounds:
            def stop_when_met(study: Any, trial: Any) -> None:
                record = trial.user_attrs.get(RECORD_ATTR) or {}
                if trial.state == TrialState.COMPLETE and record.get("feasible"):
                    log.info("trial %d meets every goal: stopping (stop_when_goals_met)", trial.number)
                    study.stop()
            callbacks.append(stop_when_met)
        if self.fail_fast:
            def stop_on_failure(study: Any, trial: Any) -> None:
                if trial.state == TrialState.FAIL:
                    study.stop()
            callbacks.append(stop_on_failure)
        callbacks.append(collect_garbage)
        frozen_before = gc.get_freeze_count()
        try:
            study.optimize(
                self.objective,
                n_trials=n_trials if n_trials is not None else (max_samples if max_samples else None),
                timeout=timeout if timeout is not None else self.strategy.max_time,
                catch=(Exception,),
                callbacks=callbacks,
                gc_after_trial=False,  # collect_garbage does it, without rescanning the import-time heap
            )
        finally:
            if not frozen_before:
                gc.unfreeze()  # the caller's process gets its collector back as it was
        if self.user_error is not None:
            raise self.user_error


def collect_garbage(study: Any, trial: Any) -> None:
    """After each trial, free the reference cycles a trial leaves (models, trainers) at once.

    A full collection walks every live object, and torch, transformers and peft leave millions after
    import: 0.47 s per trial here. After the first trial the survivors (modules, the study) are frozen
    out of later collections, which then walk only what later trials allocate.
    """
    gc.collect()
    if not gc.get_freeze_count():
        gc.freeze()


def run_study(cfg: RunConfig, *, n_trials: int | None = None, timeout: float | None = None, storage: str | None = None,
              fail_fast: bool = False, observer: PipelineObserver | None = None) -> Any:
    from autotune.results import finish_study

    runner = StudyRunner(cfg, storage=storage, observer=observer, fail_fast=fail_fast)
    study = runner.prepare()
    log.info("study %s in %s", runner.study_name, redact_url(runner.storage_url))
    runner.optimize(study, n_trials=n_trials, timeout=timeout)
    return finish_study(cfg, study, storage_url=runner.storage_url)
