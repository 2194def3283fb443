"""Sampling a point of the joint search space (define-by-run, conditional parameters respected)."""

from __future__ import annotations

import itertools
from typing import Any

from autotune.errors import ConfigError
from autotune.plan import Step
from autotune.search.space import Categorical, FloatRange, IntRange, encode_choice


def _active(step: Step, name: str, point: dict[str, Any]) -> bool:
    """Whether a searched parameter applies given what was already chosen (``CONDITIONS``)."""
    condition = step.pass_cls.Params.CONDITIONS.get(name)
    if condition is None:
        return True
    other, values = condition
    key = f"{step.name}.{other}"
    value = point[key] if key in point else step.fixed.get(other, step.pass_cls.Params.model_fields[other].default)
    return value in values


def ordered_space(step: Step) -> list[str]:
    """Searched parameters in declaration order, so a condition's controller is sampled first."""
    fields = list(step.pass_cls.Params.model_fields)
    return sorted(step.space, key=fields.index)


def suggest_point(trial: Any, steps: list[Step]) -> dict[str, Any]:
    """Ask Optuna for every active searched parameter: ``{"<pass>.<param>": value}``."""
    point: dict[str, Any] = {}
    for step in steps:
        for name in ordered_space(step):
            if not _active(step, name, point):
                continue
            key = f"{step.name}.{name}"
            spec = step.space[name]
            if isinstance(spec, Categorical):
                point[key] = trial.suggest_categorical(key, [encode_choice(c) for c in spec.choices])
            elif isinstance(spec, IntRange):
                point[key] = trial.suggest_int(key, spec.low, spec.high, step=spec.step, log=spec.log)
            else:
                point[key] = trial.suggest_float(key, spec.low, spec.high, step=spec.step, log=spec.log)
    return point


def grid_points(steps: list[Step]) -> list[dict[str, Any]]:
    """Every distinct valid point of a discrete space (inactive parameters left out, no duplicates)."""
    points: list[dict[str, Any]] = [{}]
    for step in steps:
        for name in ordered_space(step):
            spec = step.space[name]
            key = f"{step.name}.{name}"
            if isinstance(spec, Categorical):
                values = [encode_choice(c) for c in spec.choices]
            elif isinstance(spec, IntRange) and not spec.log:
                values = list(range(spec.low, spec.high + 1, spec.step))
            elif isinstance(spec, FloatRange) and spec.step and not spec.log:
                n = int(round((spec.high - spec.low) / spec.step))
                values = [round(spec.low + i * spec.step, 12) for i in range(n + 1)]
            else:
                raise ConfigError(f"{step.origin}.{name}", "grid search needs discrete values: give choices or a range with a step")
            expanded = []
            for point in points:
                if _active(step, name, point):
                    expanded += [{**point, key: v} for v in values]
                else:
                    expanded.append(point)
            points = expanded
    unique: list[dict[str, Any]] = []
    for point in points:
        if point not in unique:
            unique.append(point)
    return unique


def space_size(steps: list[Step]) -> int | None:
    try:
        return len(grid_points(steps))
    except ConfigError:
        return None


def product_size(values: list[int]) -> int:
    return int(list(itertools.accumulate(values, lambda a, b: a * b))[-1]) if values else 1
