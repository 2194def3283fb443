"""The Pass interface and its registry.

A pass is one unit of work: a model handle in, a model written to a folder out. It declares its
parameters as a pydantic model (types, defaults, which are searchable and their default space) and
what of the run context enters its cache key.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from autotune.config.errors import validate_model
from autotune.errors import ConfigError, did_you_mean
from autotune.registry import Registry

if TYPE_CHECKING:
    from autotune.context import KeyContext, PassContext, StepContext
    from autotune.models.handle import ModelHandle
    from autotune.models.module_names import ModuleNames

PASS_REGISTRY: Registry[type[Pass]] = Registry("pass type")


def searchable(default: Any, *, space: Any, description: str = "", **kwargs: Any) -> Any:
    """A pass parameter that a study may search; ``space`` is its default search space."""
    return Field(default, description=description, json_schema_extra={"searchable": True, "default_space": space}, **kwargs)


class PassParams(BaseModel):
    """Base of every pass's parameter model. ``ALIASES`` maps older spellings to canonical names."""

    model_config = ConfigDict(extra="forbid")
    ALIASES: ClassVar[dict[str, str]] = {}

    # name -> (parameter, values): the parameter applies only when that other parameter is in values.
    CONDITIONS: ClassVar[dict[str, tuple[str, tuple[Any, ...]]]] = {}

    @classmethod
    def prepare(cls, params: dict[str, Any], origin: str) -> dict[str, Any]:
        """Rewrite older shapes of the raw parameters before validation (default: unchanged)."""
        return params

    def applies(self, name: str) -> bool:
        """Whether parameter ``name`` has an effect given the others (see ``CONDITIONS``)."""
        condition = self.CONDITIONS.get(name)
        return condition is None or getattr(self, condition[0]) in condition[1]

    def resolved(self) -> dict[str, Any]:
        """The parameters that have an effect: what enters the cache key and the records."""
        return {k: v for k, v in self.model_dump(mode="json").items() if self.applies(k)}

    @classmethod
    def searchable_fields(cls) -> dict[str, Any]:
        """name -> default space, for every searchable parameter."""
        return {
            name: (field.json_schema_extra or {}).get("default_space")
            for name, field in cls.model_fields.items()
            if (field.json_schema_extra or {}).get("searchable")
        }


def canonical_params(model: type[PassParams], params: dict[str, Any], origin: str) -> dict[str, Any]:
    """Rename aliased keys (``lora_r`` -> ``r``); two spellings of one key is an error."""
    out: dict[str, Any] = {}
    spelt: dict[str, str] = {}
    for key, value in params.items():
        name = model.ALIASES.get(key, key)
        if name in out:
            raise ConfigError(f"{origin}.{key}", f"'{name}' is given twice (as '{spelt[name]}' and '{key}'); keep one")
        out[name] = value
        spelt[name] = key
    return out


def user_path(where: str, origin: str, user_keys: dict[str, str]) -> str:
    """``where`` with a canonical key (``passes.lora.config.r.step``) in the user's spelling (``...lora_r.step``)."""
    for canonical, user in user_keys.items():
        key_path = f"{origin}.{canonical}"
        if where == key_path or where.startswith((f"{key_path}.", f"{key_path}[")):
            return f"{origin}.{user}" + where[len(key_path):]
    return where


def validate_params(model: type[PassParams], params: dict[str, Any], origin: str, user_keys: dict[str, str] | None = None) -> PassParams:
    """Validate canonical params; errors name the user's own spelling of the key."""
    user_keys = user_keys or {}
    try:
        return validate_model(model, params, origin)
    except ConfigError as exc:
        where = user_path(exc.where, origin, user_keys)
        if exc.message.startswith("unknown key"):
            key = where.rsplit(".", 1)[-1]
            names = list(model.model_fields) + list(model.ALIASES)
            raise ConfigError(where, f"unknown key{did_you_mean(key, names)}") from None
        raise ConfigError(where, exc.message) from None


@dataclass
class ModelFacts:
    """What ``validate`` reads of the input model without loading its weights (each part on first use): the
    argument of :meth:`Pass.check_model`."""

    path: Path  # a safetensors folder or a GGUF file
    trust_remote_code: bool = False

    @functools.cached_property
    def modules(self) -> ModuleNames:
        """Every module name, and the leaves with a weight matrix."""
        from autotune.models.module_names import module_names

        return module_names(self.path, trust_remote_code=self.trust_remote_code)

    @functools.cached_property
    def config(self) -> dict[str, Any]:
        """The model's config (a folder's config.json; a GGUF's metadata through transformers)."""
        from autotune.models.module_names import read_model_config

        return read_model_config(self.path, trust_remote_code=self.trust_remote_code)


@dataclass(frozen=True)
class PassView:
    """What the trials table and the plots show of one pass of a trial (:meth:`Pass.view`)."""

    columns: dict[str, Any] = field(default_factory=dict)  # the trials table's columns of this pass (a depth pass: its blocks)
    depth: int | None = None  # decoder blocks removed: the plots' colour
    precision: str | None = None  # the weights' precision after this pass ("int4", "int8", "fp32"): the plots' marker shape


class Pass(ABC):
    """One step of the pipeline. Subclasses set the class attributes and implement :meth:`run`.

    Hooks a pass may override, so that the rest of the flow never names a pass: :meth:`check` and :meth:`check_model`
    (what ``validate`` refuses), :meth:`cache_context` (what of the run enters its cache key), :meth:`summary` (what
    the trial record keeps of its run) and :meth:`view` (what the trials table and the plots show);
    ``REPORT_FILES`` (what it writes beside its model that is not part of it)."""

    type_name: ClassVar[str]
    Params: ClassVar[type[PassParams]]
    accepts: ClassVar[tuple[str, ...]] = ("hf",)
    output_kind: ClassVar[str] = "hf"
    uses_data: ClassVar[bool] = False
    # A pass that reads data only for some settings (the builder's int4 calibrated by GPTQ): the plan
    # resolves its data config when one is at hand, and :meth:`reads_data` says whether it is read.
    may_use_data: ClassVar[bool] = False
    provider_in_key: ClassVar[bool] = False
    # Whether the output depends on the device the pass runs on (training: GPU and CPU numerics differ).
    device_in_key: ClassVar[bool] = False
    # What it writes beside its model about how it made it (seconds, scores): not deployed, so not counted in the
    # model's size nor its structure key (autotune.evaluation.footprint).
    REPORT_FILES: ClassVar[frozenset[str]] = frozenset()
    # The weights' precision of its output whatever its parameters (a quantizer: "int4", "int8"); None: it keeps the
    # input's, or (the model builder) its parameters say it. The plots' marker shape, through :meth:`view`.
    weight_precision: ClassVar[str | None] = None

    def device_key(self, params: PassParams, device: str, precision: str | None = None) -> dict[str, Any]:
        """What of the resolved ``engine.device`` enters the cache key (only when ``device_in_key``)."""
        return {"device": device}

    def cache_context(self, params: PassParams, ctx: KeyContext) -> StepContext | None:
        """What of the run, beyond the parameters, the parent model, the provider and the data, enters this step's cache
        key (:attr:`StepContext.key`, the key's ``runtime`` entry when not empty), and what of it the run then gets
        (:attr:`StepContext.run`, fields of its :class:`PassContext`); called while the chain's keys are computed, before
        anything runs. None: nothing. Default: the device (:meth:`device_key`) where ``device_in_key``."""
        if not self.device_in_key:
            return None
        from autotune.context import StepContext

        return StepContext(key=self.device_key(params, ctx.device))

    def reads_data(self, params: PassParams) -> bool:
        """Whether these settings read the data config (its key then enters the cache key)."""
        return self.uses_data

    def check(self, params: PassParams, *, provider: str, origin: str) -> None:  # noqa: B027
        """Refuse, before any work starts, what cannot run here (raise :class:`ConfigError`)."""

    def check_model(self, params: PassParams, model: ModelFacts, *, origin: str,  # noqa: B027
                    key: Callable[[str], str]) -> None:
        """Refuse, at ``validate`` and before a run, settings the input model cannot take (raise :class:`ConfigError`
        at ``key(field)``, the user's path of a parameter); called for every value a study may try."""

    @classmethod
    def summary(cls, model_dir: Path) -> dict[str, Any] | None:
        """What the trial record keeps of this pass's run (``TrialRecord.summaries``, by pass name), read from the
        model folder it wrote; None: nothing (the default), or its folder is not at hand."""
        return None

    @classmethod
    def view(cls, params: dict[str, Any], summary: dict[str, Any] | None) -> PassView:
        """What the trials table and the plots show of this pass in a trial, from its resolved parameters and its
        :meth:`summary`. Default: its ``weight_precision``, no columns."""
        return PassView(precision=cls.weight_precision)

    @abstractmethod
    def run(self, model: ModelHandle, params: PassParams, ctx: PassContext, output: Path) -> None:
        """Write the output model of this pass into ``output`` (an empty folder)."""


def register_pass(*names: str) -> Any:
    """Class decorator: register a pass under its ``type_name`` and any extra names."""

    def wrap(cls: type[Pass]) -> type[Pass]:
        for name in (cls.type_name, *names):
            PASS_REGISTRY.add(name, cls)
        return cls

    return wrap


