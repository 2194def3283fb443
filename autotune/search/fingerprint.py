"""What a study's scores depend on besides each trial's searched point, and the check on resume.

Trials of one study are compared with one another (one Pareto set, paired bootstraps over the same
rows, ratios to one baseline), so they must be scored on the same data split, by the same evaluator
(its metrics, each metric type's ``version`` and the evaluation's), with the same fixed pass settings.
:func:`study_fingerprint` records these in the study's meta; :func:`check_resume` refuses, before any
work, a run that would add trials under other ones, and says which fingerprint the study keeps. Searched
parameters have their own check (:func:`autotune.search.sampling.check_space_against_study`): a grid
that grows still queues its new points.

A study written before fingerprints were kept has its stored run config: the fingerprint it adopts is
built from that config (:func:`adopted_fingerprint`), so a difference from it is refused like any other.
What neither a stored config nor an older fingerprint holds (the evaluator versions) is never filled in
from the current run: it stays unrecorded, and unchecked, for that study.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from autotune.config.errors import validate_model
from autotune.config.schema import CandidateModelConfig, DataConfig, EvaluatorConfig, InputModelConfig, PassConfig
from autotune.errors import ConfigError, UserError
from autotune.evaluation import get_metric_type
from autotune.evaluation.runner import EVALUATION_VERSION
from autotune.plan import Slot, all_steps, build_plan
from autotune.records import StudyFingerprint, StudyMeta, meta_from_user_attrs

if TYPE_CHECKING:
    from autotune.config.schema import RunConfig
    from autotune.run_context import RunContext

__all__ = ["adopted_fingerprint", "check_resume", "study_fingerprint"]

SPLITS = ("train", "validation", "test")
# What names a candidate base model: a trial's base is its name, so the name must keep meaning the same files.
MODEL_KEYS = ("name", "model_path", "gguf_file", "revision")


def _rows_sha256(rows: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def study_fingerprint(ctx: RunContext) -> StudyFingerprint:
    """The fingerprint of the run about to start (after the preflight: every data config it reads is loaded)."""
    pipeline = ctx.pipeline
    data: dict[str, dict[str, Any]] = {}
    for name in pipeline.data_names():
        dataset = pipeline.data(name)
        entry: dict[str, Any] = {"template": dataset.template.text, "source_max_len": dataset.source_max_len}
        for split, rows in zip(SPLITS, (dataset.train, dataset.eval, dataset.test), strict=True):
            entry[split] = {"rows": len(rows), "sha256": _rows_sha256(rows)}
        data[name] = entry
    return StudyFingerprint(data=data, evaluator=_evaluator_entry(ctx.config, versions=True), passes=_pass_entries(pipeline.slots),
                            models=_model_entries(ctx.config))


def _evaluator_entry(config: RunConfig, *, versions: bool) -> dict[str, Any]:
    """The provider and the evaluator's metrics; with ``versions``, what the code that scores them is: the
    evaluation's version and each metric type's (the versions in the evaluation cache's keys)."""
    engine = config.engine
    evaluator: dict[str, Any] = {"provider": engine.provider}
    if engine.evaluator and engine.evaluator in config.evaluators:
        metrics = config.evaluators[engine.evaluator]
        evaluator["metrics"] = metrics.model_dump(mode="json")["metrics"]
        if versions:
            types = [get_metric_type(m.type, where="") for m in metrics.metrics]
            evaluator["versions"] = {"evaluation": EVALUATION_VERSION, "types": {t.type_name: t.version for t in types}}
            inputs = _metric_inputs(config)
            if inputs:  # files a metric reads outside the config (lm-eval task files): part of what scored the trials
                evaluator["versions"]["inputs"] = inputs
    return evaluator


def _metric_inputs(config: RunConfig) -> dict[str, Any]:
    """Each metric's ``cache_inputs`` (what outside the config it reads), by metric name; none: left out."""
    out: dict[str, Any] = {}
    for i, metric in enumerate(config.evaluators[config.engine.evaluator].metrics):
        cls = get_metric_type(metric.type, where="")
        params = validate_model(cls.Params, metric.user_config, f"evaluators.{config.engine.evaluator}.metrics[{i}].user_config")
        inputs = cls.cache_inputs(params, base_dir=config.config_dir, sub_types=[s.name for s in metric.sub_types])
        if inputs is not None:
            out[metric.name] = inputs
    return out


def _pass_entries(slots: list[Slot]) -> dict[str, dict[str, Any]]:
    passes: dict[str, dict[str, Any]] = {}
    for step in all_steps(slots):
        fixed = {k: v for k, v in step.params({}).resolved().items() if k not in step.space}
        passes[step.prefix] = {"type": step.pass_cls.type_name, "origin": step.origin, "user_keys": step.user_keys,
                               "fixed": fixed}
    return passes


def _model_entries(config: RunConfig) -> list[dict[str, Any]] | None:
    models = [{k: v for k, v in c.model_dump(mode="json").items() if k in MODEL_KEYS} for c in config.input_models]
    return models or None


def check_resume(storage: Any, study_name: str, current: StudyFingerprint, *, config: Any) -> StudyFingerprint:
    """Refuse to add trials to a stored study that was scored on other data, by another evaluator or with
    other fixed pass settings: one line naming what changed and the way out. Returns the fingerprint the
    study keeps: ``current``, less what the stored one could not vouch for (evaluator versions it did not
    record); for a study stored without one (an older autotune), the one :func:`adopted_fingerprint` builds
    from its stored run config, after every difference from it was refused."""
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return current  # a new study
    if not storage.get_n_trials(study_id):
        return current  # nothing scored yet: nothing to disagree with
    stored = storage.get_study_user_attrs(study_id)
    if not stored:
        return current
    meta = meta_from_user_attrs(stored)
    if meta.mode != "search":
        return current
    way_out = (f"study '{study_name}' keeps its trials only if they stay comparable: restore the previous setting, "
               "or start a new study (set engine.study_name, or another engine.output_dir)")
    old = meta.fingerprint
    differences: list[tuple[str, str]] = []
    if old is None:
        old, differences = adopted_fingerprint(meta, current, config, study_name=study_name)
    for where, what in differences + _differences(old, current, config):
        raise ConfigError(where, f"{what}; {way_out}")
    if meta.fingerprint is None:
        return old
    if "versions" not in old.evaluator:  # written before they were kept: which versions scored its trials is unknown
        return current.model_copy(update={"evaluator": {k: v for k, v in current.evaluator.items() if k != "versions"}})
    return current


def adopted_fingerprint(meta: StudyMeta, current: StudyFingerprint, config: RunConfig, *,
                        study_name: str) -> tuple[StudyFingerprint, list[tuple[str, str]]]:
    """The fingerprint of a study stored before fingerprints were kept, built from its stored run config
    (``meta.config``): its passes' fixed settings, its evaluator's metrics and provider, its candidate base
    models; and the settings by which its data configs differ from this config's. Its data entries are this
    run's where the stored data config has the same settings (the same files, split and template) and,
    when the meta kept them, the same row counts: the files' contents then cannot be checked. Evaluator
    versions are left out (unknown). A stored config that no longer reads back is refused (one line)."""
    try:
        stored = _stored_run_config(meta.config, config)
        passes = _pass_entries(build_plan(stored))
    except (UserError, KeyError) as exc:  # a stored setting the schema refuses now, or a key it lacks (not a bug of ours)
        reason = (str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}").splitlines()[0]
        raise ConfigError("engine.study_name", f"study '{study_name}' was written by an autotune that kept no fingerprint, "
                          f"and its stored run config does not read back ({reason}): its trials cannot be checked against "
                          "this config; start a new study (set engine.study_name, or another engine.output_dir)") from None
    differences: list[tuple[str, str]] = []
    by_name = {d.name: d for d in stored.data_configs}
    data: dict[str, dict[str, Any]] = {}
    read_then = list(meta.data) or [name for name in current.data if name in by_name]
    for name in read_then:
        was, entry = by_name.get(name), current.data.get(name)
        if was is None:
            continue  # not in the stored config: nothing known of it
        if entry is None:
            data[name] = {}  # read then, not now: the comparison names it
            continue
        index = next(i for i, d in enumerate(config.data_configs) if d.name == name)
        settings_then, settings_now = was.model_dump(mode="json"), config.data_configs[index].model_dump(mode="json")
        key = next((k for k in sorted(set(settings_then) | set(settings_now)) if settings_then.get(k) != settings_now.get(k)),
                   None)
        if key is not None:
            differences.append((f"data_configs[{index}].{key}", f"the study's trials were scored with "
                                                                 f"{_shown(settings_then.get(key))}, this config has "
                                                                 f"{_shown(settings_now.get(key))}"))
        entry = json.loads(json.dumps(entry))
        summary = meta.data.get(name)
        for split, rows_then in (zip(SPLITS, (summary.train, summary.validation, summary.test), strict=True) if summary else ()):
            if (entry.get(split) or {}).get("rows") != rows_then:
                entry[split] = {"rows": rows_then, "sha256": None}
        data[name] = entry
    return StudyFingerprint(data=data, evaluator=_evaluator_entry(stored, versions=False), passes=passes,
                            models=_model_entries(stored)), differences


def _stored_run_config(raw: dict[str, Any], config: RunConfig) -> RunConfig:
    """``config`` with the stored run config's model, data, passes and evaluators (each validated as the
    schema reads it), and its provider and evaluator name: what the fingerprint is built from."""
    engine = raw.get("engine") or {}
    providers = list(engine.get("execution_providers") or ["CPUExecutionProvider"])
    return config.model_copy(update={
        "input_model": validate_model(InputModelConfig, raw["input_model"], "input_model"),
        "input_models": [validate_model(CandidateModelConfig, c, f"input_model[{i}]")
                         for i, c in enumerate(raw.get("input_models") or [])],
        "data_configs": [validate_model(DataConfig, d, f"data_configs[{i}]") for i, d in enumerate(raw.get("data_configs") or [])],
        "passes": {str(n): validate_model(PassConfig, p, f"passes.{n}") for n, p in (raw.get("passes") or {}).items()},
        "evaluators": {str(n): validate_model(EvaluatorConfig, e, f"evaluators.{n}")
                       for n, e in (raw.get("evaluators") or {}).items()},
        "engine": config.engine.model_copy(update={"execution_providers": providers, "evaluator": engine.get("evaluator")}),
    })


def _differences(old: StudyFingerprint, new: StudyFingerprint, config: Any) -> list[tuple[str, str]]:
    return (_model_differences(old, new) + _data_differences(old, new, config) + _evaluator_differences(old, new, config)
            + _version_differences(old, new, config) + _pass_differences(old, new, _spaces(config)))


def _model_differences(old: StudyFingerprint, new: StudyFingerprint) -> list[tuple[str, str]]:
    """The candidate base models: each name must name the same model as when the study's trials ran.
    (Adding or removing a candidate changes the searched values, which the space's own check refuses.)"""
    if old.models is None and new.models is None:
        return []
    if old.models is None or new.models is None:
        then = "several base models" if old.models else "one input model"
        now = "several" if new.models else "one"
        return [("input_model", f"the study's trials ran on {then}, this config has {now}")]
    before = {m.get("name"): m for m in old.models}
    for i, now in enumerate(new.models):
        was = before.get(now.get("name"))
        if was is None:
            continue
        for key in MODEL_KEYS:
            if was.get(key) != now.get(key):
                return [(f"input_model[{i}].{key}", f"the study's trials of base '{now.get('name')}' ran with "
                                                    f"{_shown(was.get(key))}, this config has {_shown(now.get(key))}")]
    names_then = [m.get("name") for m in old.models]
    names_now = [m.get("name") for m in new.models]
    if sorted(map(str, names_then)) != sorted(map(str, names_now)):
        return [("input_model", f"the study's trials chose among base models {names_then}, this config lists {names_now}")]
    return []


def _data_where(name: str, config: Any) -> str:
    index = next((i for i, d in enumerate(config.data_configs) if d.name == name), None)
    return f"data_configs[{index}]" if index is not None else "data_configs"


def _data_differences(old: StudyFingerprint, new: StudyFingerprint, config: Any) -> list[tuple[str, str]]:
    out = []
    for name, before in old.data.items():
        now = new.data.get(name)
        where = _data_where(name, config)
        if now is None:
            out.append((where, f"the study was scored on data config '{name}', which this run does not read"))
            continue
        if before.get("template") != now.get("template"):
            out.append((f"{where}.text_template", f"the study's trials were scored on data '{name}' with another text template"))
            continue
        if before.get("source_max_len") != now.get("source_max_len"):
            out.append((f"{where}.source_max_len", f"the study's trials used source_max_len {before.get('source_max_len')}, "
                                                   f"this config {now.get('source_max_len')}"))
            continue
        for split in ("validation", "test", "train"):  # the scored rows first
            was, is_ = before.get(split) or {}, now.get(split) or {}
            if was != is_:
                rows = f"{was.get('rows')} rows then, {is_.get('rows')} now" if was.get("rows") != is_.get("rows") \
                    else f"{is_.get('rows')} rows, other ones"
                out.append((where, f"data '{name}' changed since the study's trials were scored: its {split} split differs "
                                   f"({rows}: the data file or its split settings changed)"))
                break
    for name in new.data:
        if name not in old.data:
            out.append((_data_where(name, config), f"the study's trials were not scored on data config '{name}'"))
    return out


def _evaluator_differences(old: StudyFingerprint, new: StudyFingerprint, config: Any) -> list[tuple[str, str]]:
    before, now = old.evaluator, new.evaluator
    if before.get("provider") != now.get("provider"):
        return [("engine.provider", f"the study's trials were measured on {before.get('provider')}, this config runs on "
                                    f"{now.get('provider')}")]
    if before.get("metrics") == now.get("metrics"):
        return []
    where = f"evaluators.{config.engine.evaluator}" if config.engine.evaluator else "evaluators"
    old_metrics = {m.get("name"): m for m in before.get("metrics") or []}
    new_metrics = {m.get("name"): m for m in now.get("metrics") or []}
    for i, (name, metric) in enumerate(new_metrics.items()):
        was = old_metrics.get(name)
        if was is None:
            return [(f"{where}.metrics[{i}]", f"the study's evaluator had no metric '{name}' (it had: {', '.join(old_metrics)})")]
        keys = [k for k in sorted(set(was) | set(metric)) if was.get(k) != metric.get(k)]
        if keys:
            return [(f"{where}.metrics[{i}].{keys[0]}", f"the study's trials were scored by another evaluator: metric "
                                                        f"'{name}' had another {keys[0]}")]
    gone = [name for name in old_metrics if name not in new_metrics]
    return [(f"{where}.metrics", f"the study's evaluator also had metric(s) {', '.join(gone) or 'in another order'}")]


def _version_differences(old: StudyFingerprint, new: StudyFingerprint, config: Any) -> list[tuple[str, str]]:
    """The code that scored the trials: the evaluation's version and each metric type's (unrecorded in a
    fingerprint written before they were kept: nothing to compare then)."""
    before, now = old.evaluator.get("versions"), new.evaluator.get("versions")
    if not before or not now:
        return []
    where = f"evaluators.{config.engine.evaluator}" if config.engine.evaluator else "evaluators"
    if before.get("evaluation") != now.get("evaluation"):
        return [(where, f"the study's trials were scored by evaluation version {before.get('evaluation')}, this autotune's is "
                        f"{now.get('evaluation')} (it measures differently since)")]
    types_then, types_now = before.get("types") or {}, now.get("types") or {}
    metrics = config.evaluators[config.engine.evaluator].metrics if config.engine.evaluator in config.evaluators else []
    for i, metric in enumerate(metrics):
        type_name = get_metric_type(metric.type, where="").type_name
        if type_name in types_then and types_then[type_name] != types_now.get(type_name):
            return [(f"{where}.metrics[{i}].type", f"the study's trials were scored by metric type {type_name} version "
                                                   f"{types_then[type_name]}, this autotune's is version "
                                                   f"{types_now.get(type_name)} (it measures differently since)")]
        then, now_inputs = (before.get("inputs") or {}).get(metric.name), (now.get("inputs") or {}).get(metric.name)
        if then is not None and then != now_inputs:
            return [(f"{where}.metrics[{i}].user_config", f"the files metric '{metric.name}' reads changed since the study's trials "
                                                          "were scored (its task files or their data, or the lm-eval version)")]
    return []


def _spaces(config: Any) -> dict[str, dict[str, Any]]:
    """Each pass's (and alternative's) searched parameters in ``config``, by prefix."""
    return {step.prefix: step.space for step in all_steps(build_plan(config))}


def _admits(spec: Any, value: Any) -> bool:
    """Whether a search space spec (Categorical or a range) holds ``value``: a setting fixed at ``value``
    then and searched over a space that holds it now is a grid that grew, its old trials the points at ``value``."""
    choices = getattr(spec, "choices", None)
    if choices is not None:
        return any(c == value for c in choices)
    low, high = getattr(spec, "low", None), getattr(spec, "high", None)
    return isinstance(value, (int, float)) and low is not None and high is not None and low <= value <= high


def _pass_differences(old: StudyFingerprint, new: StudyFingerprint,
                      spaces: dict[str, dict[str, Any]] | None = None) -> list[tuple[str, str]]:
    out = []
    for prefix, before in old.passes.items():
        now = new.passes.get(prefix)
        if now is None:
            continue  # a pass (or alternative) the config no longer has: its searched values are checked elsewhere
        origin, user_keys = now.get("origin") or f"passes.{prefix}", now.get("user_keys") or {}
        if before.get("type") != now.get("type"):
            out.append((f"{origin}.type", f"the study's trials ran pass '{prefix}' as {before.get('type')}, this config as "
                                          f"{now.get('type')}"))
            continue
        was, is_ = before.get("fixed") or {}, now.get("fixed") or {}
        # Every key of either side: a setting fixed now that the trials searched (or the other way round)
        # differs too. A key absent on one side reads as null, so a new parameter whose default is null
        # (an option added later, unset) compares equal to a fingerprint written before it existed.
        for key in sorted(set(was) | set(is_)):
            where = f"{origin}.{user_keys.get(key, key)}"
            if key not in was and is_[key] is not None:
                out.append((where, f"the study's trials ran without it fixed (searched, or not a setting then), this "
                                   f"config fixes it at {_shown(is_[key])}"))
                break
            if key not in is_ and was[key] is not None:
                searched = (spaces or {}).get(prefix, {}).get(key)
                if searched is not None and _admits(searched, was[key]):
                    continue  # a grid that grew: the old trials are its points at the value they were fixed at
                out.append((where, f"the study's trials ran with it fixed at {_shown(was[key])}, this config does not fix "
                                   "it (searched, or no such setting now)"))
                break
            path = _first_difference(was.get(key), is_.get(key))
            if path is not None:
                shown_old, shown_new = path[1], path[2]
                out.append((f"{where}{path[0]}",
                            f"the study's trials ran with {_shown(shown_old)}, this config has {_shown(shown_new)} "
                            "(a fixed setting, not searched)"))
                break
    old_passes = {p.split(".", 1)[0] for p in old.passes}
    new_passes = {p.split(".", 1)[0] for p in new.passes}
    if old_passes != new_passes:
        out.append(("passes", f"the study's trials ran passes {sorted(old_passes)}, this config has {sorted(new_passes)}"))
    return out


def _first_difference(old: Any, new: Any, path: str = "") -> tuple[str, Any, Any] | None:
    """(".key.sub", old, new) of the first nested value that differs, or None."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            found = _first_difference(old.get(key), new.get(key), f"{path}.{key}")
            if found is not None:
                return found
        return None
    return None if old == new else (path, old, new)


def _shown(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value
