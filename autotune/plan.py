"""The plan: the config's passes resolved to pass classes, fixed parameters and search spaces."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from autotune.config.schema import RunConfig
from autotune.data import resolve_data_name
from autotune.errors import ConfigError
from autotune.passes import get_pass
from autotune.passes.base import Pass, PassParams, canonical_params, user_path, validate_params
from autotune.space import Categorical, FloatRange, IntRange, SearchSpec, decode_choice, split_params

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
    # Prefix of this step's keys in a point: the pass name, or "<group>.<alternative>" in a group.
    prefix: str = ""

    def __post_init__(self) -> None:
        self.prefix = self.prefix or self.name

    def key(self, param: str) -> str:
        return f"{self.prefix}.{param}"

    def params(self, point: dict[str, Any] | None = None) -> PassParams:
        """Validated parameters: the fixed values plus this step's share of a sampled ``point``."""
        values = dict(self.fixed)
        for name, spec in self.space.items():
            key = self.key(name)
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
        data_name = resolve_data_name(config, fixed.get("train_data_config"), where=f"{origin}.train_data_config",
                                      missing="name the data config to train on")
    elif pass_cls.may_use_data and (fixed.get("train_data_config") or len(config.data_configs) == 1):
        data_name = resolve_data_name(config, fixed.get("train_data_config"), where=f"{origin}.train_data_config",
                                      missing="name the data config to calibrate on")
        fixed["train_data_config"] = data_name  # the params know calibration data is at hand (data-aware defaults)
    return Step(name=name, pass_cls=pass_cls, fixed=fixed, space=space, origin=origin, user_keys=user_keys, data_name=data_name)


@dataclass
class Choice:
    """A pass group: the point's ``<name>.pass`` picks one alternative."""

    name: str
    options: dict[str, Step]  # label -> step (label: the pass type, or type#i when repeated)
    origin: str

    @property
    def key(self) -> str:
        return f"{self.name}.pass"

    def chosen(self, point: dict[str, Any] | None) -> Step:
        if point is not None and self.key in point:
            return self.options[point[self.key]]
        return next(iter(self.options.values()))


BASE_KEY = "input_model"  # a point's base model, when input_model lists candidates


@dataclass
class BaseChoice:
    """The base model: a point's ``input_model`` names one of the candidates (a categorical parameter)."""

    names: list[str]
    name: str = BASE_KEY
    origin: str = BASE_KEY

    @property
    def key(self) -> str:
        return BASE_KEY


Slot = Step | Choice | BaseChoice


def base_of(point: dict[str, Any] | None) -> str | None:
    """The base model a point names (None: the config's one input model, or its default base)."""
    return None if point is None else point.get(BASE_KEY)


def build_plan(config: RunConfig) -> list[Slot]:
    slots: list[Slot] = [BaseChoice(names=config.base_names)] if config.base_names else []
    for name, spec in config.passes.items():
        if not spec.alternatives:
            slots.append(build_step(name, spec.type, spec.params, spec.origin, config))
            continue
        types = [o.type for o in spec.alternatives]
        options: dict[str, Step] = {}
        for i, option in enumerate(spec.alternatives):
            step = build_step(name, option.type, option.params, option.origin, config)
            label = step.pass_cls.type_name if types.count(option.type) == 1 else f"{step.pass_cls.type_name}#{i}"
            step.prefix = f"{name}.{label}"
            options[label] = step
        slots.append(Choice(name=name, options=options, origin=spec.origin))
    return slots


def resolve(slots: list[Slot], point: dict[str, Any] | None = None) -> list[Step]:
    """The steps that run at ``point``: each group's chosen alternative."""
    return [slot.chosen(point) if isinstance(slot, Choice) else slot for slot in slots if not isinstance(slot, BaseChoice)]


def all_steps(slots: list[Slot]) -> list[Step]:
    return [s for slot in slots if not isinstance(slot, BaseChoice)
            for s in (slot.options.values() if isinstance(slot, Choice) else [slot])]


KIND_WORDS = {"hf": "a Hugging Face model", "adapter": "a LoRA adapter", "onnx": "an ONNX model"}


def check_passes(config: RunConfig) -> None:
    """Validate every pass's parameters (each choice of a search), chaining and device support."""
    slots = build_plan(config)
    provider = config.engine.provider
    kind = "hf"
    before = "the input model"
    for slot in slots:
        if isinstance(slot, BaseChoice):
            if config.engine.search_strategy is None:
                raise ConfigError("input_model", "lists several base models but engine.search_strategy is false; keep one "
                                                 "or set a search strategy")
            continue
        if isinstance(slot, Choice):
            if config.engine.search_strategy is None and len(slot.options) > 1:
                raise ConfigError(slot.origin, "lists alternatives but engine.search_strategy is false; keep one or set a search strategy")
            outputs = {s.pass_cls.output_kind for s in slot.options.values()}
            if len(outputs) > 1:
                raise ConfigError(slot.origin, f"alternatives must give the same kind of model (these give {sorted(outputs)})")
            for step in slot.options.values():
                _check_step(step, config, provider, kind, before)
            kind = outputs.pop()
        else:
            _check_step(slot, config, provider, kind, before)
            kind = slot.pass_cls.output_kind
        before = f"the pass before ('{slot.name}')"


def _check_step(step: Step, config: RunConfig, provider: str, kind: str, before: str) -> None:
    if step.space and config.engine.search_strategy is None:
        name = next(iter(step.space))
        raise ConfigError(
            f"{step.origin}.{step.user_keys.get(name, name)}",
            "is a search space but engine.search_strategy is false; give one value or set a search strategy",
        )
    for point in probe_points(step):
        params = step.params(point)
        step.pass_cls().check(params, provider=provider, origin=step.origin)
    if kind not in step.pass_cls.accepts:
        takes = " or ".join(KIND_WORDS.get(k, k) for k in step.pass_cls.accepts)
        raise ConfigError(
            f"{step.origin.removesuffix('.config')}.type",
            f"{step.pass_cls.type_name} takes {takes} but {before} gives {KIND_WORDS.get(kind, kind)}",
        )


def probe_points(step: Step) -> list[dict[str, Any]]:
    """One point per choice/bound of each searched parameter, to validate every value a study may try."""
    points: list[dict[str, Any]] = [{}]
    for name, spec in step.space.items():
        key = step.key(name)
        if isinstance(spec, Categorical):
            from autotune.space import encode_choice

            values = [encode_choice(c) for c in spec.choices]
        elif isinstance(spec, (IntRange, FloatRange)):
            values = [spec.low, spec.high]
        else:  # pragma: no cover
            values = []
        points += [{key: v} for v in values]
    return points
