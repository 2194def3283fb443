"""The ``lm_eval`` metric type: lm-evaluation-harness tasks (the field's standard ones, or a user's own task
YAMLs) scored on what a trial built, on the trial's execution provider, with every sample kept.

A sub-type names a metric the tasks report, as lm-eval writes it: ``acc``, ``acc_norm``, ``exact_match``,
``exact_match,strict-match`` (a filter), or ``task/metric`` where several tasks report it. Each sample's score is
stored (``details.correct`` for 0/1 outcomes, else ``details.scores``, with ``details.rows_sha256`` over the
samples' prompts), so the paired bootstrap, "indistinguishable", goals against the baseline, the card and the
report treat an lm-eval metric as they treat accuracy. A metric lm-eval aggregates other than by the mean
(corpus BLEU, MCC, F1 over a set) keeps lm-eval's value with no per-sample scores and no interval: nothing a
paired comparison could resample.

lm-eval is the optional extra ``autotune[lm-eval]``, imported only when this metric runs or is checked.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import numbers
import re
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from autotune.errors import ConfigError
from autotune.evaluation.backends import open_backend
from autotune.evaluation.base import (
    EvalContext,
    EvalModel,
    Metric,
    MetricType,
    MetricTypeParams,
    SubType,
    deprecated_names,
    register_metric_type,
)
from autotune.evaluation.metrics import wilson_interval

__all__ = ["LmEvalMetricType", "LmEvalParams", "resolve_sub_type"]

log = logging.getLogger("autotune")

_SUB_TYPE = re.compile(r"(?:(?P<task>[\w.\-]+)/)?(?P<metric>[\w.\-]+)(?:,(?P<filter>[\w.\-]+))?")
# lm-eval's metrics where lower is better (its own registry says so; kept here so a config is read without it).
LOWER_IS_BETTER = frozenset({"perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte", "ter", "brier_score"})
RATIO_METRICS = frozenset({"acc", "acc_norm", "acc_mutual_info", "exact_match", "f1", "mcc", "brier_score",
                           "prompt_level_strict_acc", "prompt_level_loose_acc", "inst_level_strict_acc", "inst_level_loose_acc"})


class LmEvalParams(MetricTypeParams):
    tasks: list[str] = Field(min_length=1)
    # A folder of the user's own task YAMLs (relative to the config file); searched before lm-eval's own tasks.
    include_path: str | None = None
    num_fewshot: int | None = Field(None, ge=0)
    # Documents per task (the first ones, as lm-eval's --limit).
    limit: int | None = Field(None, gt=0)
    apply_chat_template: bool = False
    system_instruction: str | None = None
    # Sequences per teacher-forced pass (log-likelihood requests; a pass also holds at most 768 padded tokens).
    batch_size: int = Field(16, gt=0)
    # Tokens of context a request keeps (left-truncated, as lm-eval's --max_length); default: the model's context
    # length. Also bounds memory: a rolling window's logits are max_length x vocabulary floats.
    max_length: int | None = Field(None, gt=1)

    @field_validator("tasks")
    @classmethod
    def _unique(cls, tasks: list[str]) -> list[str]:
        seen = [t for i, t in enumerate(tasks) if t in tasks[:i]]
        if seen:
            raise ValueError(f"task '{seen[0]}' is listed twice")
        return tasks


def resolve_sub_type(name: str, reported: dict[str, list[str]], *, where: str) -> tuple[str, str]:
    """(task, ``metric,filter`` key) a sub-type names among what each task reports; a ConfigError otherwise."""
    match = _SUB_TYPE.fullmatch(name)
    if match is None:
        raise ConfigError(where, f"'{name}' is not an lm-eval metric name (metric, metric,filter or task/metric)")
    task, metric, filt = match.group("task"), match.group("metric"), match.group("filter")
    if task is not None and task not in reported:
        raise ConfigError(where, f"'{name}' names task '{task}', which is not among this metric's tasks ({', '.join(reported)})")
    found = []
    for candidate in ([task] if task else list(reported)):
        keys = [k for k in reported[candidate] if k.split(",", 1)[0] == metric]
        if filt is not None:
            keys = [k for k in keys if k == f"{metric},{filt}"]
        elif len(keys) > 1:
            keys = [k for k in keys if k == f"{metric},none"] or keys
        if len(keys) > 1:
            raise ConfigError(where, f"task '{candidate}' reports '{metric}' under several filters ({', '.join(keys)}): "
                                     f"name one, e.g. '{metric},{keys[0].split(',', 1)[1]}'")
        found += [(candidate, k) for k in keys]
    if not found:
        offered = sorted({k.split(",", 1)[0] if k.endswith(",none") else k for keys in reported.values() for k in keys})
        raise ConfigError(where, f"no task reports '{name}' (they report: {', '.join(offered)})")
    if len(found) > 1:
        raise ConfigError(where, f"several tasks report '{name}' ({', '.join(t for t, _ in found)}): write task/metric, "
                                 f"e.g. '{found[0][0]}/{name}'")
    return found[0]


@register_metric_type("lm-eval", "lm_evaluation_harness")
class LmEvalMetricType(MetricType):
    type_name = "lm_eval"
    Params = LmEvalParams
    version = 1

    @classmethod
    def sub_type(cls, name: str, *, where: str) -> str:
        if _SUB_TYPE.fullmatch(name) is None:
            raise ConfigError(where, f"'{name}' is not an lm-eval metric name (metric, metric,filter or task/metric)")
        return name

    @classmethod
    def describe(cls, name: str, *, higher_is_better: bool | None = None) -> SubType:
        metric = name.rsplit("/", 1)[-1].split(",", 1)[0]
        default = metric not in LOWER_IS_BETTER
        unit = "ratio" if metric in RATIO_METRICS else "score"
        return SubType(unit, default if higher_is_better is None else higher_is_better, f"{name} (lm-eval)", "accuracy")

    @classmethod
    def cache_inputs(cls, params: LmEvalParams, *, base_dir: Path, sub_types: list[str]) -> Any:
        from autotune.evaluation.harness_tasks import task_fingerprint

        # The sub-types too: a score holds the metrics asked for, so one asked for later is scored then.
        return {**task_fingerprint(params.tasks, include_path=params.include_path, base_dir=base_dir), "sub_types": sub_types}

    @classmethod
    def check_inputs(cls, params: LmEvalParams, *, where: str, base_dir: Path, sub_types: list[Any]) -> None:
        """Before anything runs (validate and the run's preflight): the tasks exist, their data can be read, their
        generations are greedy, and each sub-type names a metric one of them reports, in the direction lm-eval
        says it goes."""
        from autotune.evaluation.harness_model import check_generation_kwargs
        from autotune.evaluation.harness_tasks import build_tasks, find_tasks, leaf_tasks, reported_metrics

        manager, specs = find_tasks(params.tasks, include_path=params.include_path, base_dir=base_dir, where=f"{where}.user_config")
        built = leaf_tasks(build_tasks(manager, specs, where=f"{where}.user_config"))
        for name, task in built.items():
            if task.get_config("output_type") == "generate_until":
                check_generation_kwargs(task.get_config("generation_kwargs") or {}, where=f"{where}.user_config.tasks",
                                        task=name, max_length=params.max_length)
        reported = {name: reported_metrics(task) for name, task in built.items()}
        for j, sub in enumerate(sub_types):
            task, key = resolve_sub_type(sub.name, reported, where=f"{where}.sub_types[{j}].name")
            says = (built[task].higher_is_better() or {}).get(key.split(",", 1)[0])
            ours = cls.describe(sub.name, higher_is_better=sub.higher_is_better).higher_is_better
            if isinstance(says, bool) and says != ours:
                raise ConfigError(f"{where}.sub_types[{j}]", f"lm-eval says {'higher' if says else 'lower'} is better for "
                                                             f"'{sub.name}' (task {task}): set higher_is_better: {str(says).lower()}")

    def evaluate(self, model: EvalModel, params: LmEvalParams, ctx: EvalContext) -> dict[str, Metric]:
        from lm_eval.evaluator import simple_evaluate

        from autotune.evaluation.harness_model import HarnessLM
        from autotune.evaluation.harness_tasks import find_tasks
        from autotune.models.hub import hub_reachable

        where = "evaluators"
        backend = open_backend(model, provider=ctx.provider, trust_remote_code=ctx.trust_remote_code)
        lm = HarnessLM(backend, batch_size=params.batch_size, where=where, max_length=params.max_length)
        manager, specs = find_tasks(params.tasks, include_path=params.include_path, base_dir=ctx.base_dir, where=where)
        # lm-eval draws its progress bars with disable=False written out, past TQDM_DISABLE; they go to stderr.
        with hub_reachable(datasets=True), contextlib.redirect_stderr(io.StringIO()):
            out = simple_evaluate(model=lm, tasks=[s.spec for s in specs], num_fewshot=params.num_fewshot, limit=params.limit,
                                  bootstrap_iters=0, log_samples=True, apply_chat_template=params.apply_chat_template,
                                  system_instruction=params.system_instruction, task_manager=manager)
        results, samples = out["results"], out.get("samples") or {}
        groups = set(out.get("group_subtasks") or {}) - set(samples)  # as validate resolves them: tasks, not groups
        reported = {task: [k for k in values if "," in k and not k.split(",", 1)[0].endswith("_stderr")]
                    for task, values in results.items() if task not in groups}
        metrics: dict[str, Metric] = {}
        for name in ctx.sub_types or {}:
            task, key = resolve_sub_type(name, reported, where=where)
            metrics[name] = self._metric(name, task, key, out, samples.get(task), params, ctx)
        return metrics

    def _metric(self, name: str, task: str, key: str, out: dict[str, Any], samples: list[dict[str, Any]] | None,
                params: LmEvalParams, ctx: EvalContext) -> Metric:
        metric, filt = key.split(",", 1)
        value = float(out["results"][task][key])
        config = (out.get("configs") or {}).get(task) or {}
        info = {"task": task, "metric": metric, "filter": filt, "version": (out.get("versions") or {}).get(task),
                "num_fewshot": (out.get("n-shot") or {}).get(task), "limit": params.limit,
                "output_type": config.get("output_type"), "tasks": params.tasks}
        rows = sorted((s for s in samples or [] if s.get("filter", filt) == filt and metric in s), key=lambda s: s["doc_id"])
        per_row = [s[metric] for s in rows]
        details: dict[str, Any] = {"lm_eval": info}
        numeric = bool(rows) and all(isinstance(v, (numbers.Real, np.bool_)) for v in per_row)  # numpy's too
        # Per-sample scores serve a paired comparison only where lm-eval's aggregate is their mean.
        if numeric and abs(sum(float(v) for v in per_row) / len(per_row) - value) <= 1e-9 * max(1.0, abs(value)):
            scores = [float(v) for v in per_row]
            details["rows_sha256"] = hashlib.sha256(json.dumps(
                [[task, s["doc_id"], s.get("doc_hash"), s.get("prompt_hash")] for s in rows]).encode()).hexdigest()
            if all(v in (0.0, 1.0) for v in scores):
                details["correct"] = "".join("1" if v else "0" for v in scores)
                low, high = wilson_interval(int(sum(scores)), len(scores))
            else:
                from autotune.evaluation.generation import bootstrap_mean_interval

                details["scores"] = [round(v, 6) for v in scores]
                low, high = bootstrap_mean_interval(scores)
            return self.metric(name, value, ctx, n=len(scores), ci_low=min(low, value), ci_high=max(high, value), details=details)
        info["aggregation"] = "not the sample mean" if rows else "group"  # lm-eval's value only: nothing to resample
        return self.metric(name, value, ctx, n=len(rows) or None, details=details)


__getattr__ = deprecated_names(__name__, {"LmEvalEvaluator": "LmEvalMetricType"}, globals())  # the 0.1 name, for one release
