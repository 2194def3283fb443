"""Search-space specs for pass parameters and their Optuna distributions.

A pass parameter is either a fixed value or a search:
- a list of choices (for a list-typed parameter such as ``target_modules``: a list of lists),
  or ``{choices: [...]}``;
- a range ``{low, high, step?, log?}``: an int range when low/high/step are ints, else a float range.
Ranges stay native Optuna distributions (ordered ints stay ordered; ``log: true`` is log-uniform).

A leaf at the top of the package (as Optuna keeps ``distributions.py``): the plan, the passes and the
search all read it downward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, get_args, get_origin

from autotune.errors import ConfigError

RANGE_KEYS = {"low", "high", "step", "log"}


@dataclass(frozen=True)
class Categorical:
    choices: tuple[Any, ...]

    def distribution(self) -> Any:
        import optuna

        # Optuna stores categorical choices as JSON scalars; lists are encoded as strings.
        return optuna.distributions.CategoricalDistribution([encode_choice(c) for c in self.choices])


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int
    step: int = 1
    log: bool = False

    def distribution(self) -> Any:
        import optuna

        return optuna.distributions.IntDistribution(self.low, self.high, step=self.step, log=self.log)


@dataclass(frozen=True)
class FloatRange:
    low: float
    high: float
    step: float | None = None
    log: bool = False

    def distribution(self) -> Any:
        import optuna

        return optuna.distributions.FloatDistribution(self.low, self.high, step=self.step, log=self.log)


SearchSpec = Categorical | IntRange | FloatRange


def encode_choice(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return value


def decode_choice(spec: Categorical, encoded: Any) -> Any:
    for choice in spec.choices:
        if encode_choice(choice) == encoded:
            return list(choice) if isinstance(choice, tuple) else choice
    return encoded


def _is_list_type(annotation: Any) -> bool:
    if get_origin(annotation) in (list, tuple):
        return True
    return any(_is_list_type(arg) for arg in get_args(annotation) if arg is not type(None))


def parse_spec(value: Any, *, path: str, list_typed: bool) -> SearchSpec | None:
    """The search spec written at ``path``, or None when ``value`` is a fixed value."""
    if isinstance(value, dict) and "choices" in value:
        extra = set(value) - {"choices"}
        if extra:
            raise ConfigError(f"{path}.{sorted(extra)[0]}", "unknown key beside 'choices'")
        return _categorical(value["choices"], path)
    if isinstance(value, dict) and value and set(value) <= RANGE_KEYS:
        return _range(value, path)
    if isinstance(value, list) and not list_typed:
        return _categorical(value, path)
    if isinstance(value, list) and list_typed and any(isinstance(v, list) for v in value):
        # A list of lists (maybe with a keyword such as "all-linear") is a choice among values.
        return _categorical([tuple(v) if isinstance(v, list) else v for v in value], path)
    return None


def _categorical(choices: Any, path: str) -> Categorical:
    if not isinstance(choices, list) or not choices:
        raise ConfigError(path, "a search over choices needs a non-empty list")
    unique: list[Any] = []
    for choice in choices:
        choice = tuple(choice) if isinstance(choice, list) else choice
        if choice in unique:
            raise ConfigError(path, f"choice {choice!r} is listed twice")
        unique.append(choice)
    return Categorical(tuple(unique))


def _number(value: Any, path: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(path, f"expected a finite number, got {value!r}")
    return value


def _range(value: dict[str, Any], path: str) -> IntRange | FloatRange:
    for key in ("low", "high"):
        if key not in value:
            raise ConfigError(f"{path}.{key}", "required key is missing in a range")
    low = _number(value["low"], f"{path}.low")
    high = _number(value["high"], f"{path}.high")
    step = value.get("step")
    log = value.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{path}.log", f"expected true or false, got {log!r}")
    if low > high:
        raise ConfigError(path, f"low ({low}) is greater than high ({high})")
    if step is not None:
        step = _number(step, f"{path}.step")
        if step <= 0:
            raise ConfigError(f"{path}.step", f"expected a positive step, got {step}")
        if log:
            raise ConfigError(f"{path}.step", "a log range cannot have a step")
    if log and low <= 0:
        raise ConfigError(f"{path}.low", f"a log range needs low > 0, got {low}")
    if all(isinstance(v, int) for v in (low, high)) and (step is None or isinstance(step, int)):
        return IntRange(int(low), int(high), int(step or 1), log)
    return FloatRange(float(low), float(high), None if step is None else float(step), log)


def split_params(params: dict[str, Any], model: Any, origin: str) -> tuple[dict[str, Any], dict[str, SearchSpec]]:
    """Split raw pass parameters into fixed values and search specs (for searchable fields only)."""
    fixed: dict[str, Any] = {}
    searched: dict[str, SearchSpec] = {}
    for key, value in params.items():
        field = model.model_fields.get(key)
        if field is None:
            fixed[key] = value
            continue
        spec = parse_spec(value, path=f"{origin}.{key}", list_typed=_is_list_type(field.annotation))
        if spec is None:
            fixed[key] = value
            continue
        if not (field.json_schema_extra or {}).get("searchable"):
            raise ConfigError(f"{origin}.{key}", "this parameter is not searchable; give one value")
        searched[key] = spec
    return fixed, searched
