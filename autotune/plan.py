"""The plan: the config's passes resolved to pass classes, fixed parameters and search spaces."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from autotune.config.schema import RunConfig
from autotune.errors import ConfigError
from autotune.passes.base import Pass, PassParams, canonical_params, get_pass, user_path, validate_params
from autotune.search.space import Categorical, FloatRange, IntRange, SearchSpec, decode_choice, split_params

DEFAULT_SPACE = "SEARCHABLE_VALUES"


@dataclass
class Step:
    name: str
    pass_cls: type[Pass]
    fixed: dict[str, Any]
    space: dict[str, SearchSpec]
    origin: str
    user_keys: dict[str, str] = field(default_factory=dict)
    data_name: str | None = None

    def params(self, point: dict[str, Any] | None = None) -> PassParams:
        """Validated parameters: the fixed values plus this step's share of a sampled ``point``."""
        values = dict(self.fixed)
        for name, spec in self.space.items():
            key = f"{self.name}.{name}"
            if point is not None and key in point:
                value = point[key]
                values[name] = decode_choice(spec, value) if isinstance(spec, Categorical) else value
        return validate_params(self.pass_cls.Params, values, self.origin, self.user_keys)


def build_step(name: str, ptype: str, raw: dict[str, Any], origin: str, config: RunConfig) -> Step:
    pass_cls = get_pass(ptype, path=f"passes.{name}.type")
    model = pass_cls.Params
    user_keys = {model.ALIASES.get(k, k): k for k in raw if k in model.ALIASES}
    params = model.prepare(canonical_params(model, raw, origin), origin)
    defaults = model.searchable_fields()
    for key, value in list(params.items()):
        if isinstance(value, str) and value == DEFAULT_SPACE:  # Olive's spelling: search over the default space
            if key not in defaults:
                raise ConfigError(f"{origin}.{user_keys.get(key, key)}", "this parameter is not searchable")
            params[key] = defaults[key]
    try:
        fixed, space = split_params(params, model, origin)
    except ConfigError as exc:  # a search spec's path names the canonical key; give the user's spelling
        raise ConfigError(user_path(exc.where, origin, user_keys), exc.message) from None
    data_name = None
    if pass_cls.uses_data:
        data_name = fixed.get("train_data_config")
        names = [d.name for d in config.data_configs]
        if data_name is None:
            if len(names) != 1:
                raise ConfigError(f"{origin}.train_data_config", f"name the data config to train on (have: {names or 'none'})")
            data_name = names[0]
        elif data_name not in names:
            raise ConfigError(f"{origin}.train_data_config", f"no data config named '{data_name}' (have: {names})")
    return Step(name=name, pass_cls=pass_cls, fixed=fixed, space=space, origin=origin, user_keys=user_keys, data_name=data_name)


def build_plan(config: RunConfig) -> list[Step]:
    return [build_step(n, p.type, p.params, p.origin, config) for n, p in config.passes.items()]


KIND_WORDS = {"hf": "a Hugging Face model", "adapter": "a LoRA adapter", "onnx": "an ONNX model"}


def check_passes(config: RunConfig) -> None:
    """Validate every pass's parameters (each choice of a search), chaining and device support."""
    steps = build_plan(config)
    provider = config.engine.provider
    kind = "hf"
    before = "the input model"
    for step in steps:
        if step.space and config.engine.search_strategy is None:
            name = next(iter(step.space))
            raise ConfigError(
                f"{step.origin}.{step.user_keys.get(name, name)}",
                "is a search space but engine.search_strategy is false; give one value or set a search strategy",
            )
        for point in _probe_points(step):
            params = step.params(point)
            step.pass_cls().check(params, provider=provider, origin=step.origin)
        if kind not in step.pass_cls.accepts:
            takes = " or ".join(KIND_WORDS.get(k, k) for k in step.pass_cls.accepts)
            raise ConfigError(
                f"passes.{step.name}.type",
                f"{step.pass_cls.type_name} takes {takes} but {before} gives {KIND_WORDS.get(kind, kind)}",
            )
        kind = step.pass_cls.output_kind
        before = f"the pass before ('{step.name}')"


def _probe_points(step: Step) -> list[dict[str, Any]]:
    """One point per choice/bound of each searched parameter, to validate every value a study may try."""
    points: list[dict[str, Any]] = [{}]
    for name, spec in step.space.items():
        key = f"{step.name}.{name}"
        if isinstance(spec, Categorical):
            from autotune.search.space import encode_choice

            values = [encode_choice(c) for c in spec.choices]
        elif isinstance(spec, (IntRange, FloatRange)):
            values = [spec.low, spec.high]
        else:  # pragma: no cover
            values = []
        points += [{key: v} for v in values]
    return points
