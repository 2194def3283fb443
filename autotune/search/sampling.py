"""Sampling a point of the joint search space (define-by-run; conditional parameters and pass
alternatives respected: a parameter is asked for only when it applies)."""

from __future__ import annotations

import logging
from typing import Any

from autotune.errors import ConfigError
from autotune.plan import BaseChoice, Choice, Slot, Step
from autotune.search.objectives import ConstraintsFunc
from autotune.space import Categorical, FloatRange, IntRange, encode_choice


def _active(step: Step, name: str, point: dict[str, Any]) -> bool:
    """Whether a searched parameter applies given what was already chosen (``CONDITIONS``)."""
    condition = step.pass_cls.Params.CONDITIONS.get(name)
    if condition is None:
        return True
    other, values = condition
    key = step.key(other)
    value = point[key] if key in point else step.fixed.get(other, step.pass_cls.Params.model_fields[other].default)
    return value in values


def ordered_space(step: Step) -> list[str]:
    """Searched parameters in declaration order, so a condition's controller is sampled first."""
    fields = list(step.pass_cls.Params.model_fields)
    return sorted(step.space, key=fields.index)


def _suggest_step(trial: Any, step: Step, point: dict[str, Any]) -> None:
    for name in ordered_space(step):
        if not _active(step, name, point):
            continue
        key = step.key(name)
        spec = step.space[name]
        if isinstance(spec, Categorical):
            point[key] = trial.suggest_categorical(key, [encode_choice(c) for c in spec.choices])
        elif isinstance(spec, IntRange):
            point[key] = trial.suggest_int(key, spec.low, spec.high, step=spec.step, log=spec.log)
        else:
            point[key] = trial.suggest_float(key, spec.low, spec.high, step=spec.step, log=spec.log)


def suggest_point(trial: Any, slots: list[Slot]) -> dict[str, Any]:
    """Ask Optuna for every active searched parameter: ``{"<pass>.<param>": value}``."""
    point: dict[str, Any] = {}
    for slot in slots:
        if isinstance(slot, BaseChoice):
            point[slot.key] = trial.suggest_categorical(slot.key, list(slot.names))
        elif isinstance(slot, Choice):
            if len(slot.options) > 1:
                point[slot.key] = trial.suggest_categorical(slot.key, list(slot.options))
            _suggest_step(trial, slot.chosen(point), point)
        else:
            _suggest_step(trial, slot, point)
    return point


def _values(step: Step, name: str) -> list[Any]:
    spec = step.space[name]
    if isinstance(spec, Categorical):
        return [encode_choice(c) for c in spec.choices]
    if isinstance(spec, IntRange) and not spec.log:
        return list(range(spec.low, spec.high + 1, spec.step))
    if isinstance(spec, FloatRange) and spec.step and not spec.log:
        n = int(round((spec.high - spec.low) / spec.step))
        return [round(spec.low + i * spec.step, 12) for i in range(n + 1)]
    raise ConfigError(f"{step.origin}.{name}", "grid search needs discrete values: give choices or a range with a step")


def _expand(step: Step, points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for name in ordered_space(step):
        expanded = []
        for point in points:
            if _active(step, name, point):
                expanded += [{**point, step.key(name): v} for v in _values(step, name)]
            else:
                expanded.append(point)
        points = expanded
    return points


def grid_points(slots: list[Slot]) -> list[dict[str, Any]]:
    """Every distinct valid point of a discrete space (inactive parameters left out, no duplicates)."""
    points: list[dict[str, Any]] = [{}]
    for slot in slots:
        if isinstance(slot, BaseChoice):
            points = [{**p, slot.key: name} for p in points for name in slot.names]
        elif isinstance(slot, Choice):
            expanded = []
            for label, step in slot.options.items():
                chosen = [{**p, slot.key: label} if len(slot.options) > 1 else dict(p) for p in points]
                expanded += _expand(step, chosen)
            points = expanded
        else:
            points = _expand(slot, points)
    unique: list[dict[str, Any]] = []
    for point in points:
        if point not in unique:
            unique.append(point)
    return unique


def space_size(slots: list[Slot]) -> int | None:
    try:
        return len(grid_points(slots))
    except ConfigError:
        return None


def distributions(slots: list[Slot]) -> dict[str, Any]:
    """The Optuna distribution of every parameter the space may ask for, by its point key."""
    import optuna

    out: dict[str, Any] = {}
    for slot in slots:
        if isinstance(slot, BaseChoice):
            out[slot.key] = optuna.distributions.CategoricalDistribution(list(slot.names))
            continue
        steps = list(slot.options.values()) if isinstance(slot, Choice) else [slot]
        if isinstance(slot, Choice) and len(slot.options) > 1:
            out[slot.key] = optuna.distributions.CategoricalDistribution(list(slot.options))
        for step in steps:
            for name, spec in step.space.items():
                out[step.key(name)] = spec.distribution()
    return out


def check_space_against_study(slots: list[Slot], study: Any, study_name: str) -> None:
    """Refuse a space whose parameter an earlier trial of the study searched over other values: Optuna
    cannot change a parameter's values within a study (an added parameter is fine)."""
    import optuna

    planned = distributions(slots)
    seen: set[str] = set()
    for trial in study.get_trials(deepcopy=False):
        for name, old in trial.distributions.items():
            if name in seen or name not in planned:
                continue
            seen.add(name)
            try:
                optuna.distributions.check_distribution_compatibility(old, planned[name])
            except ValueError:
                if old == planned[name]:
                    continue
                raise ConfigError(_param_where(name), f"study '{study_name}' searched it over {_values_text(old)}; another set of "
                                  "values needs a new study (set engine.study_name), or keep the old values") from None
            if isinstance(old, optuna.distributions.CategoricalDistribution) and old != planned[name]:
                raise ConfigError(_param_where(name), f"study '{study_name}' searched it over {_values_text(old)}; another set of "
                                  "values needs a new study (set engine.study_name), or keep the old values")


def _param_where(name: str) -> str:
    """The config key of a point's parameter: the base model's list, or a pass parameter."""
    return "input_model" if name == "input_model" else f"passes.{name}"


def _values_text(distribution: Any) -> str:
    choices = getattr(distribution, "choices", None)
    if choices is not None:
        return "[" + ", ".join(str(c) for c in choices) + "]"
    return f"[{distribution.low}, {distribution.high}]"


def interleave_prefixes(points: list[dict[str, Any]], slots: list[Slot]) -> list[dict[str, Any]]:
    """The grid reordered so that consecutive points differ in the earliest pass they vary: parallel
    jobs (``run --jobs``) then start on different fine-tunes instead of waiting for one another's."""
    for slot in slots:
        if isinstance(slot, BaseChoice):
            continue  # grouped with the first pass below: another base is another fine-tune of every pass
        prefix = (slot.prefix if isinstance(slot, Step) else slot.name) + "."
        groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for point in points:
            shared = tuple(sorted((k, v) for k, v in point.items() if k.startswith(prefix) or k == "input_model"))
            groups.setdefault(shared, []).append(point)
        if len(groups) > 1:
            queues = list(groups.values())
            return [q[i] for i in range(max(len(q) for q in queues)) for q in queues if i < len(q)]
    return points


def make_sampler(cfg: Any, slots: list[Any], n_bounds: int, *, job: int = 0) -> tuple[Any, list[dict[str, Any]]]:
    """The Optuna sampler for ``engine.search_strategy.sampler`` and any points to enqueue first.
    ``job`` k > 0 (``run --jobs``) offsets the seed, so parallel jobs do not propose the same points."""
    import optuna

    strategy = cfg.engine.search_strategy
    if strategy is None:  # a single run: one fixed point, nothing to sample
        return optuna.samplers.RandomSampler(seed=0), []
    if job:
        strategy = strategy.model_copy(update={"seed": strategy.seed + 1009 * job})
    name = strategy.sampler
    constraints = ConstraintsFunc(n_bounds) if n_bounds else None
    if name == "auto":
        size = space_size(slots)
        name = "grid" if size is not None and size <= (strategy.max_samples or size) else "tpe"
        logging.getLogger("autotune").info("sampler auto: %s (space of %s points)", name, size if size is not None else "continuous")
    if name == "grid":
        # Enqueue each distinct valid point (conditional parameters left out) and let a random
        # sampler fill anything else: no duplicated or invalid grid points.
        return optuna.samplers.RandomSampler(seed=strategy.seed), grid_points(slots)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=strategy.seed), []
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=strategy.seed, constraints_func=constraints), []
    if name == "gp":
        return optuna.samplers.GPSampler(seed=strategy.seed, constraints_func=constraints), []
    return optuna.samplers.TPESampler(seed=strategy.seed, multivariate=True, group=True, constraints_func=constraints,
                                      n_startup_trials=min(5, strategy.max_samples or 5)), []
