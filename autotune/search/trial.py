"""One trial: a point of the search space -> a :class:`TrialRecord`, with every state transition here.

RUNNING (owner recorded) -> COMPLETE | PRUNED (early stop, duplicate point) | FAIL (error: traceback
in a per-trial log; Ctrl-C: queued again; a user's mistake: queued again and the study stops).
"""

from __future__ import annotations

import logging
import math
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune.errors import TrialTimeout, UserError
from autotune.evaluation.base import EvalModel
from autotune.evaluation.goals import Bound
from autotune.fileio import write_text
from autotune.plan import base_of, resolve
from autotune.records import ObjectiveSpec, PassSummary, TrialRecord, write_constraints, write_record
from autotune.search.early_stop import MedianRule, TrialStopped
from autotune.search.fidelity import SliceStopped
from autotune.search.objectives import constraint_values
from autotune.search.recovery import INTERRUPTED, this_owner
from autotune.search.sampling import suggest_point

if TYPE_CHECKING:
    from autotune.run_context import RunContext

__all__ = ["INTERRUPTED", "TrialRunner"]  # INTERRUPTED: re-exported from search.recovery

log = logging.getLogger("autotune")


class TrialRunner:
    """The Optuna objective: runs the pipeline and the evaluator for the trial's point."""

    def __init__(self, ctx: RunContext, *, objectives: list[ObjectiveSpec], bounds: list[Bound], early_stop: Any,
                 log_dir: Path, duplicates: Any = None, say: Callable[[str], None] | None = None,
                 base_bounds: dict[str, list[Bound]] | None = None) -> None:
        self.ctx = ctx
        self.pipeline = ctx.pipeline
        self.evaluator = ctx.evaluator() if ctx.config.engine.evaluator else None
        self.objectives = objectives
        self.bounds = bounds
        self.base_bounds = base_bounds or {}  # a study that searches the base model: each base's own bounds
        self.early_stop = early_stop  # EarlyStopConfig, or None: never stop early
        self.log_dir = log_dir
        self.duplicates = duplicates  # search.stopping.Duplicates, or None (an infinite space)
        self.say = say or log.info
        self.user_error: UserError | None = None
        self.progress: Any = None  # search.stopping.StudyProgress, set by the study loop
        self.fidelity: Any = None  # search.fidelity.FidelityRule, set by the study loop when multi-fidelity is on

    def __call__(self, trial: Any) -> tuple[float, ...]:
        import optuna

        began = time.perf_counter()
        point = suggest_point(trial, self.pipeline.slots)
        record = TrialRecord(number=trial.number, point=point, owner=this_owner(), base=base_of(point),
                             params={s.name: s.params(point).resolved() for s in resolve(self.pipeline.slots, point)})
        write_record(trial, record)
        if self.duplicates is not None:
            earlier = self.duplicates.earlier(trial, point)
            if earlier is not None:
                # Two workers racing for a grid's last queued point get here too: the loser's trial is
                # one of these (Optuna creates a sampled trial once the queue is empty), uncounted.
                record.state, record.duplicate_of = "PRUNED", earlier
                queued = self.duplicates.replace(trial)
                record.prune_reason = f"duplicate of trial {earlier}: " + (
                    "an unseen point is queued instead" if queued else "every point of the space has a trial")
                self._finish(trial, record, began)
                self.say(f"trial {trial.number}: {record.prune_reason}")
                raise optuna.TrialPruned(record.prune_reason)
        where = f" {self.progress.trial_started()}" if self.progress is not None else ""
        if point or where:
            self.say(f"trial {trial.number}{where}: " + ", ".join(f"{k}={v}" for k, v in point.items()))
        try:
            values = self._measure(trial, point, record)
        except (TrialStopped, SliceStopped) as stop:
            record.state, record.prune_reason = "PRUNED", stop.reason
            self._finish(trial, record, began)
            self.say(f"trial {trial.number}: stopped early: {stop.reason}")
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
            first_line = str(exc).splitlines()[0][:300] if str(exc) else ""
            record.fail_reason = f"{type(exc).__name__}: {first_line}"
            record.log_file = str(self._write_traceback(trial.number, exc))
            self._finish(trial, record, began)
            self.say(f"trial {trial.number}: failed: {record.fail_reason} (traceback: {record.log_file})")
            raise
        record.state = "COMPLETE"
        write_constraints(trial, [record.constraints[b.metric] for b in self.bounds])
        self._finish(trial, record, began)
        summary = ", ".join(f"{o.title} {values[o.metric]:.4g}" for o in self.objectives)  # the table's labels, not ids
        self.say(f"trial {trial.number}: {summary}{'' if record.feasible else ' (infeasible)'} in {record.seconds:.1f} s")
        return tuple(values[o.metric] for o in self.objectives)

    def _measure(self, trial: Any, point: dict[str, Any], record: TrialRecord) -> dict[str, float]:
        """Run the passes and the evaluator; fill the record; the objective values by metric id."""
        timeout = self.ctx.config.engine.trial_timeout
        deadline = time.monotonic() + timeout if timeout else None
        rule = MedianRule(self.early_stop, trial.study, trial) if self.early_stop is not None else None

        def report(step: int, loss: float) -> None:
            if rule is not None and math.isfinite(loss):
                rule.report(step, loss)

        began = time.perf_counter()
        # No rule to read the intermediate losses (early stopping off, as for a grid): the fine-tune skips its
        # validation passes (in the main job, 6 of 32 rows per fine-tune, ~10 % of its time).
        result = self.pipeline.run(point, report_intermediate=report if rule is not None else None, deadline=deadline)
        record.passes = [PassSummary(name=p.name, type=p.type, key=p.key, seconds=p.seconds, cache_hit=p.cache_hit)
                         for p in result.passes]
        record.model_key = result.model.key
        record.artifacts = {p.name: self.ctx.cache.location(p.key) for p in result.passes}
        record.summaries = self._summaries(result.passes)
        if deadline and time.monotonic() > deadline:
            raise TrialTimeout(f"trial_timeout={timeout:g} s exceeded after the passes")
        values: dict[str, float] = {}
        if self.evaluator is not None:
            eval_began = time.perf_counter()
            model = EvalModel(path=result.model.path, kind=result.model.kind, key=result.model.key)
            if self.fidelity is not None:
                try:
                    metrics = self.fidelity.evaluate(model, self._front(trial.study))
                finally:
                    record.evaluation_seconds = time.perf_counter() - eval_began
            else:
                metrics = self.evaluator.evaluate(model)
            record.evaluation_seconds = time.perf_counter() - eval_began
            record.metrics = {k: m for k, m in metrics.items()}
            values = {k: m.value for k, m in metrics.items()}
        # A run without an evaluator (a single run may have none) is measured by its wall time alone.
        values.setdefault("seconds.total", time.perf_counter() - began)
        record.objectives = {o.metric: values[o.metric] for o in self.objectives}
        record.constraints = constraint_values(self.base_bounds.get(record.base or "", self.bounds), values)
        record.feasible = all(v <= 0 for v in record.constraints.values())
        return values

    def _summaries(self, passes: list[Any]) -> dict[str, dict[str, Any]]:
        """What each pass says of its run (``Pass.summary``, read from its cache entry's model folder), by pass name;
        a pass that says nothing, or whose folder is not here, is left out."""
        from autotune.passes import get_pass

        out: dict[str, dict[str, Any]] = {}
        for record in passes:
            summary = get_pass(record.type, path="").summary(self.ctx.cache.entry(record.key) / "model")
            if summary is not None:
                out[record.name] = summary
        return out

    def _front(self, study: Any) -> list[TrialRecord]:
        """The current Pareto front: feasible completed trials no other completed trial dominates."""
        from optuna.trial import TrialState

        from autotune.records import StudyMeta, StudyView, read_record
        from autotune.selection.pareto import pareto_set

        done = [read_record(t) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
        done = [r for r in done if all(o.metric in r.objectives for o in self.objectives)]
        return pareto_set(StudyView(study.study_name, StudyMeta(objectives=self.objectives), done))

    def _write_traceback(self, number: int, exc: BaseException) -> Path:
        path = self.log_dir / f"trial-{number}.log"
        write_text(path, "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        return path

    def _finish(self, trial: Any, record: TrialRecord, began: float) -> None:
        if self.progress is not None and record.duplicate_of is None:
            self.progress.trial_finished(record.passes)
        record.seconds = time.perf_counter() - began
        work = sum(p.seconds for p in record.passes) + record.evaluation_seconds
        record.orchestration_seconds = max(0.0, record.seconds - work)
        write_record(trial, record)
