"""Turn pydantic validation errors into one-line messages that name the user's key path."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from autotune.errors import ConfigError, did_you_mean


def join_path(prefix: str, *parts: str | int) -> str:
    """Join key-path parts: ``join_path("passes.lora", "config", 0)`` -> ``passes.lora.config[0]``."""
    out = prefix
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out = f"{out}.{part}" if out else str(part)
    return out


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


_EXPECTED = {
    "int_parsing": "expected an integer",
    "int_type": "expected an integer",
    "int_from_float": "expected an integer",
    "float_parsing": "expected a number",
    "float_type": "expected a number",
    "bool_parsing": "expected true or false",
    "bool_type": "expected true or false",
    "string_type": "expected a string",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "path_type": "expected a path",
}


_BOUNDS = {
    "greater_than": ("greater than", "gt"),
    "greater_than_equal": ("of at least", "ge"),
    "less_than": ("less than", "lt"),
    "less_than_equal": ("of at most", "le"),
}


def _field_names(model: type[BaseModel]) -> list[str]:
    names: list[str] = []
    for name, field in model.model_fields.items():
        names.append(field.alias or name)
        choices = getattr(field.validation_alias, "choices", None)
        if choices:
            names.extend(str(c) for c in choices)
    return names


def _model_at(model: type[BaseModel], loc: Iterable[str | int]) -> type[BaseModel] | None:
    """The pydantic model that holds the last element of ``loc`` (for nearest-key hints)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            continue
        field = current.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        current = _first_model(ann)
        if current is None:
            return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _first_model(ann: Any) -> type[BaseModel] | None:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def config_error_from(exc: ValidationError, model: type[BaseModel], prefix: str) -> ConfigError:
    """The first error of ``exc`` as a :class:`ConfigError` with the full key path."""
    err = exc.errors()[0]
    loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
    # Pydantic puts the union member's tag in the loc ("int", "list[str]"); drop those.
    loc = [p for p in loc if not (isinstance(p, str) and ("[" in p or p in {"int", "float", "str", "bool"}))]
    path = join_path(prefix, *loc)
    kind = err["type"]
    value = err.get("input")
    if kind == "extra_forbidden":
        parent = _model_at(model, loc[:-1])
        hint = did_you_mean(str(loc[-1]), _field_names(parent)) if parent else ""
        return ConfigError(path, f"unknown key{hint}")
    if kind == "missing":
        return ConfigError(path, "required key is missing")
    if kind in _EXPECTED:
        return ConfigError(path, f"{_EXPECTED[kind]}, got {_describe(value)}")
    if kind in _BOUNDS:
        words, key = _BOUNDS[kind]
        bound = err.get("ctx", {}).get(key)
        bound = int(bound) if isinstance(bound, float) and bound.is_integer() else bound
        return ConfigError(path, f"expected a number {words} {bound}, got {_describe(value)}")
    if kind in ("literal_error", "enum"):
        expected = err.get("ctx", {}).get("expected", "")
        return ConfigError(path, f"expected one of {expected}, got {_describe(value)}")
    msg = err["msg"]
    msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return ConfigError(path, msg[0].lower() + msg[1:] if msg else "invalid value")


def validate_model(model: type[BaseModel], data: Any, prefix: str) -> Any:
    """``model.model_validate(data)`` with errors raised as one-line :class:`ConfigError`."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise config_error_from(exc, model, prefix) from None
