"""What a study's scores depend on besides each trial's searched point, and the check on resume.

Trials of one study are compared with one another (one Pareto set, paired bootstraps over the same
rows, ratios to one baseline), so they must be scored on the same data split, by the same evaluator,
with the same fixed pass settings. :func:`study_fingerprint` records these in the study's meta;
:func:`check_resume` refuses, before any work, a run that would add trials under other ones. Searched
parameters have their own check (:func:`autotune.search.sampling.check_space_against_study`): a grid
that grows still queues its new points.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from autotune.errors import ConfigError
from autotune.plan import all_steps
from autotune.records import StudyFingerprint, read_meta

if TYPE_CHECKING:
    from autotune.run_context import RunContext

__all__ = ["check_resume", "study_fingerprint"]

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
    engine = ctx.config.engine
    evaluator: dict[str, Any] = {"provider": engine.provider}
    if engine.evaluator and engine.evaluator in ctx.config.evaluators:
        evaluator["metrics"] = ctx.config.evaluators[engine.evaluator].model_dump(mode="json")["metrics"]
    passes: dict[str, dict[str, Any]] = {}
    for step in all_steps(pipeline.slots):
        fixed = {k: v for k, v in step.params({}).resolved().items() if k not in step.space}
        passes[step.prefix] = {"type": step.pass_cls.type_name, "origin": step.origin, "user_keys": step.user_keys,
                               "fixed": fixed}
    models = [{k: v for k, v in c.model_dump(mode="json").items() if k in MODEL_KEYS} for c in ctx.config.input_models]
    return StudyFingerprint(data=data, evaluator=evaluator, passes=passes, models=models or None)


def check_resume(storage: Any, study_name: str, current: StudyFingerprint, *, config: Any) -> None:
    """Refuse to add trials to a stored study that was scored on other data, by another evaluator or with
    other fixed pass settings: one line naming what changed and the way out. A study stored without a
    fingerprint (an older autotune) is accepted; the caller then stores ``current`` in its meta."""
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return  # a new study
    if not storage.get_n_trials(study_id):
        return  # nothing scored yet: nothing to disagree with
    stored = _StoredAttrs(storage.get_study_user_attrs(study_id))
    if not stored.user_attrs:
        return
    meta = read_meta(stored)
    if meta.mode != "search" or meta.fingerprint is None:
        return
    way_out = (f"study '{study_name}' keeps its trials only if they stay comparable: restore the previous setting, "
               "or start a new study (set engine.study_name, or another engine.output_dir)")
    for where, what in _differences(meta.fingerprint, current, config):
        raise ConfigError(where, f"{what}; {way_out}")


class _StoredAttrs:
    """The stored user attributes where :func:`read_meta` expects a study."""

    def __init__(self, user_attrs: dict[str, Any]) -> None:
        self.user_attrs = user_attrs


def _differences(old: StudyFingerprint, new: StudyFingerprint, config: Any) -> list[tuple[str, str]]:
    return (_model_differences(old, new) + _data_differences(old, new, config) + _evaluator_differences(old, new, config)
            + _pass_differences(old, new))


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


def _pass_differences(old: StudyFingerprint, new: StudyFingerprint) -> list[tuple[str, str]]:
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
        for key in sorted(set(was) & set(is_)):
            path = _first_difference(was[key], is_[key])
            if path is not None:
                shown_old, shown_new = path[1], path[2]
                out.append((f"{origin}.{user_keys.get(key, key)}{path[0]}",
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
