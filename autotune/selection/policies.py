"""Selection policies: each picks one trial from the candidates and says why, in one sentence.

A policy is a small class behind :class:`Policy`, registered by name in :data:`POLICIES` (the config
schema and the CLI validate against it). Its own settings are its ``Options`` (a pydantic model), given as
``engine.selection.options`` in the config, ``--option KEY=VALUE`` to ``autotune select`` and ``options=`` to
:func:`autotune.api.select`. Adding one, with or without settings, touches this file only.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from autotune.records import ObjectiveSpec, TrialRecord
from autotune.registry import Registry

__all__ = ["POLICIES", "Policy", "PolicyOptions", "policy_names", "policy_options", "register_policy"]


class PolicyOptions(BaseModel):
    """A policy's own settings (``engine.selection.options``); a policy without any keeps this empty model."""

    model_config = ConfigDict(extra="forbid")


class Policy(ABC):
    """Chooses among feasible Pareto candidates (never empty); deterministic, ties by lower trial number."""

    name: ClassVar[str]
    help: ClassVar[str]
    Options: ClassVar[type[PolicyOptions]] = PolicyOptions

    def __init__(self, options: PolicyOptions | None = None) -> None:
        self.options = options if options is not None else self.Options()

    @abstractmethod
    def choose(self, candidates: list[TrialRecord], objectives: list[ObjectiveSpec]) -> tuple[TrialRecord, str]:
        """The chosen trial and the rule in words (completed by the caller with where it chose from)."""


POLICIES: Registry[type[Policy]] = Registry("selection policy")


def register_policy(cls: type[Policy]) -> type[Policy]:
    POLICIES.add(cls.name, cls)
    return cls


def policy_names() -> list[str]:
    return [name for name, _ in POLICIES.items()]


def policy_options(policy: str, given: dict[str, Any] | None, *, where: str = "selection.options") -> PolicyOptions:
    """``given`` checked against the policy's ``Options``: an unknown or mistyped setting is refused (one line
    naming ``where`` and the key), never ignored."""
    cls = POLICIES.lookup(policy, where="selection.policy", what="selection policy", label=lambda c: c.name)
    try:
        return cls.Options.model_validate(given or {})
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(p) for p in error["loc"])
        settings = ", ".join(cls.Options.model_fields) or "none"
        if error["type"] == "extra_forbidden":
            raise _config_error(f"{where}.{key}", f"policy '{policy}' has no setting '{key}' (its settings: {settings})") from None
        raise _config_error(f"{where}.{key}" if key else where, f"policy '{policy}': {error['msg']}") from None


def _config_error(where: str, message: str) -> Exception:
    from autotune.errors import ConfigError

    return ConfigError(where, message)


def _tiebreak(record: TrialRecord, objectives: list[ObjectiveSpec]) -> tuple[Any, ...]:
    """Sort key: objectives in priority order (best first), then the lower trial number."""
    return (*[-(record.objectives[o.metric]) if o.higher_is_better else record.objectives[o.metric] for o in objectives],
            record.number)


def _normalised(records: list[TrialRecord], objectives: list[ObjectiveSpec]) -> list[list[float]]:
    """Each objective scaled to [0, 1] over ``records``, 1 being best."""
    out = [[0.0] * len(objectives) for _ in records]
    for j, o in enumerate(objectives):
        values = [r.objectives[o.metric] for r in records]
        low, high = min(values), max(values)
        for i, v in enumerate(values):
            scaled = 1.0 if high == low else (v - low) / (high - low)
            out[i][j] = scaled if o.higher_is_better else 1.0 - scaled
    return out


def _first_of(objectives: list[ObjectiveSpec], kind: str) -> ObjectiveSpec | None:
    return next((o for o in objectives if o.kind == kind), None)


def _best_by(first: ObjectiveSpec, candidates: list[TrialRecord], objectives: list[ObjectiveSpec]) -> TrialRecord:
    order = [first] + [o for o in objectives if o is not first]
    return min(candidates, key=lambda r: _tiebreak(r, order))


@register_policy
class MaxAccuracy(Policy):
    name = "max-accuracy"
    help = "the most accurate trial; ties broken by the other objectives"

    def choose(self, candidates: list[TrialRecord], objectives: list[ObjectiveSpec]) -> tuple[TrialRecord, str]:
        # The accuracy objective, or (a study without one) the first objective that is maximised.
        first = _first_of(objectives, "accuracy") or next((o for o in objectives if o.higher_is_better), objectives[0])
        others = ", ".join(o.title for o in objectives if o is not first) or "nothing else"
        return _best_by(first, candidates, objectives), f"highest {first.title}; ties broken by {others}, then lower trial number"


@register_policy
class MinLatency(Policy):
    name = "min-latency"
    help = "the fastest trial (the latency objective); ties broken by the other objectives"

    def choose(self, candidates: list[TrialRecord], objectives: list[ObjectiveSpec]) -> tuple[TrialRecord, str]:
        latency = _first_of(objectives, "latency")
        if latency is None:
            from autotune.errors import ConfigError

            raise ConfigError("selection.policy", "min-latency needs a latency objective, and this study has none")
        return (_best_by(latency, candidates, objectives),
                f"lowest {latency.title}; ties broken by the other objectives, then lower trial number")


@register_policy
class Knee(Policy):
    name = "knee"
    help = "closest to the ideal point, each objective scaled to [0, 1]"

    def choose(self, candidates: list[TrialRecord], objectives: list[ObjectiveSpec]) -> tuple[TrialRecord, str]:
        scaled = _normalised(candidates, objectives)
        dist = [math.dist(s, [1.0] * len(objectives)) for s in scaled]
        best = min(zip(dist, [r.number for r in candidates], candidates), key=lambda t: (t[0], t[1]))[2]
        return best, "closest to the ideal point after scaling each objective to [0, 1]; ties: lower trial number"


class WeightedOptions(PolicyOptions):
    # Objective metric -> weight; none given: every objective weighs 1.
    weights: dict[str, float] = Field(default_factory=dict)


@register_policy
class Weighted(Policy):
    name = "weighted"
    help = "highest weighted sum of the scaled objectives (options.weights, or --weight METRIC=W)"
    Options = WeightedOptions

    def choose(self, candidates: list[TrialRecord], objectives: list[ObjectiveSpec]) -> tuple[TrialRecord, str]:
        assert isinstance(self.options, WeightedOptions)
        weights = self.options.weights or {o.metric: 1.0 for o in objectives}
        unknown = sorted(set(weights) - {o.metric for o in objectives})
        if unknown:
            raise _config_error("selection.options.weights", f"'{unknown[0]}' is not an objective (objectives: "
                                f"{', '.join(o.metric for o in objectives)})")
        scaled = _normalised(candidates, objectives)
        score = [sum(weights.get(o.metric, 0.0) * s[j] for j, o in enumerate(objectives)) for s in scaled]
        best = max(zip(score, [-r.number for r in candidates], candidates), key=lambda t: (t[0], t[1]))[2]
        shown = ", ".join(f"{o.title} {weights.get(o.metric, 0.0):g}" for o in objectives)
        return best, f"highest weighted sum of scaled objectives (weights: {shown}); ties: lower trial number"
