"""The docs' generated reference tables, built from the code so that they cannot drift from it.

A page writes a marker (an HTML comment, invisible where the page is read unbuilt, as on GitHub) and the
mkdocs hook (``docs/hooks/autotune_hook.py``) replaces it with a Markdown table at build time:

- ``<!-- autotune:passes -->``: every registered pass type (``autotune.passes.base.PASS_REGISTRY``): its
  names, summary and searchable parameters.
- ``<!-- autotune:pass NAME -->``: one pass type's parameters (its ``Params`` model): type, default,
  default search space, description.
- ``<!-- autotune:metrics -->``: every registered metric type (the registry in ``autotune.evaluation.base``).
- ``<!-- autotune:metric NAME -->``: one metric type's sub-types (``SUB_TYPES``) and ``user_config`` fields.
- ``<!-- autotune:policies -->``: every registered selection policy (``autotune.selection.policies.POLICIES``).
- ``<!-- autotune:config PART -->``: the keys of ``engine``, ``input_model``, a data config or a metric, from ``autotune.config.schema``.
- ``<!-- autotune:include PATH -->``: a Markdown file of the repository (``bench/README.md``), without its title.

A parameter's description is its pydantic ``Field(description=...)``, else the comment written directly above
(or beside) its line in the class that declares it. Plain module (no mkdocs import): ``tests/test_docs.py`` calls
these functions directly.
"""

from __future__ import annotations

import ast
import inspect
import io
import re
import sys
import textwrap
import tokenize
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # this checkout's autotune, installed (editable) or not
    sys.path.insert(0, str(ROOT))

MARKER = re.compile(r"<!--\s*autotune:(?P<name>[\w-]+)(?:\s+(?P<arg>[^\s>]+))?\s*-->")
# Anything that starts like a marker: one that does not parse as MARKER is an unknown marker, not plain text.
ANY_MARKER = re.compile(r"<!--\s*autotune:.*?-->", re.S)

__all__ = ["ANY_MARKER", "BUILDERS", "CONFIG_PARTS", "MARKER", "check_marker", "config_table", "expand", "include", "markers",
           "metric_registry", "metric_table", "metrics_table", "pass_registry", "pass_table", "passes_table", "policies_table",
           "registered_metrics", "registered_passes"]


# ---------------------------------------------------------------------------------------------- registries


def _registered(registry: Any) -> dict[str, tuple[type, list[str]]]:
    """type name -> (class, its other registered names), in registration order."""
    out: dict[str, tuple[type, list[str]]] = {}
    for name, cls in registry.items():
        entry = out.setdefault(cls.type_name, (cls, []))
        if name != cls.type_name:
            entry[1].append(name)
    return out


# A chain's order (what a pass takes > what it writes): the passes table lists them as a pipeline runs them.
STAGES = ("hf>hf", "hf>adapter", "adapter>hf", "hf>onnx", "onnx>onnx")


def _stage(cls: type) -> int:
    step = f"{cls.accepts[0]}>{cls.output_kind}"
    return STAGES.index(step) if step in STAGES else len(STAGES)


def pass_registry() -> Any:
    """``autotune.passes.base.PASS_REGISTRY``, the built-in passes registered."""
    import autotune.passes  # noqa: F401  (registers the built-in passes)
    from autotune.passes.base import PASS_REGISTRY

    return PASS_REGISTRY


def metric_registry() -> Any:
    """The metric-type registry (``autotune.evaluation.METRIC_TYPES``), the built-in metric types registered."""
    from autotune.evaluation import METRIC_TYPES

    return METRIC_TYPES


def registered_passes() -> dict[str, tuple[type, list[str]]]:
    """Every registered pass type -> (class, other names), in pipeline order, then by name."""
    found = _registered(pass_registry())
    return {name: found[name] for name in sorted(found, key=lambda n: (_stage(found[n][0]), n.lower()))}


def registered_metrics() -> dict[str, tuple[type, list[str]]]:
    """Every registered metric type -> (class, other names), by name."""
    found = _registered(metric_registry())
    return {name: found[name] for name in sorted(found)}


# ---------------------------------------------------------------------------------------------- formatting


def _cell(text: str) -> str:
    """Text for one table cell: one line, a pipe outside code spans escaped (Python-Markdown's tables keep a pipe
    inside a code span as it is, and would show an escape there)."""
    parts = re.split(r"(`[^`]*`)", " ".join(text.split()))
    return "".join(part if part.startswith("`") else part.replace("|", "\\|") for part in parts)


def _rst(text: str) -> str:
    """Docstring reStructuredText to Markdown: ``x`` and :role:`x` to `x`."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


def _summary(cls: type) -> str:
    """The class docstring's first paragraph, else its module's (one line)."""
    for doc in (cls.__doc__, getattr(sys.modules.get(cls.__module__), "__doc__", None)):
        if doc and doc.strip():
            return _rst(" ".join(inspect.cleandoc(doc).split("\n\n", 1)[0].split()))
    return ""


def _value(value: Any) -> str:
    """A default or a search value as the config writes it (YAML-ish)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_value(v)}" for k, v in value.items()) + "}"
    if hasattr(value, "model_dump"):  # a nested parameter model: the values it sets beyond its fields' defaults
        return _value(value.model_dump(mode="json", exclude_defaults=True))
    return str(value)


def _type(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(_value(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(_type(a) for a in args)}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


_BOUNDS = (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤"))


def _bounds(field: Any) -> str:
    found = []
    for item in field.metadata:
        for attr, sign in _BOUNDS:
            if getattr(item, attr, None) is not None:
                found.append(f"{sign} {getattr(item, attr)}")
    return ", ".join(found)


def _comments(model: type) -> dict[str, str]:
    """field -> the comment block directly above its line (else the comment at its end) in the class body that
    declares it; a subclass's own comment wins over its base's."""
    found: dict[str, str] = {}
    for klass in model.__mro__:
        if klass.__module__.startswith(("builtins", "pydantic")):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        lines = source.splitlines()
        trailing = {t.start[0]: t.string.lstrip("#").strip() for t in tokenize.generate_tokens(io.StringIO(source).readline)
                    if t.type == tokenize.COMMENT and not t.line.strip().startswith("#")
                    and not t.string.lstrip("#").strip().startswith(("noqa", "type:"))}
        (node,) = ast.parse(source).body
        for stmt in getattr(node, "body", []):
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)) or stmt.target.id in found:
                continue
            above = []
            row = stmt.lineno - 2  # the line above, 0-based
            while row >= 0 and lines[row].strip().startswith("#"):
                above.insert(0, lines[row].strip().lstrip("#").strip())
                row -= 1
            text = " ".join(above) or next((trailing[r] for r in range(stmt.lineno, stmt.end_lineno + 1) if r in trailing), "")
            if text:
                found[stmt.target.id] = text
    return found


def _description(name: str, field: Any, comments: dict[str, str]) -> str:
    return _rst(field.description or comments.get(name, ""))


def _default(field: Any) -> str:
    from pydantic_core import PydanticUndefined

    if field.default_factory is not None:
        return f"`{_value(field.default_factory())}`"
    if field.default is PydanticUndefined:
        return "(required)"
    return f"`{_value(field.default)}`"


def _condition(model: type, name: str) -> str:
    condition = getattr(model, "CONDITIONS", {}).get(name)
    if condition is None:
        return ""
    other, values = condition
    return f"Applies only when `{other}` is {' or '.join(f'`{_value(v)}`' for v in values)}."


def _nested_model(annotation: Any) -> tuple[type, str] | None:
    """A field's nested parameter model and how its keys are written under the field: ``.`` for a model (or a
    model or null), ``[].`` for a list of them; None for any other type."""
    from pydantic import BaseModel

    def model(candidate: Any) -> bool:
        return isinstance(candidate, type) and issubclass(candidate, BaseModel)

    if model(annotation):
        return annotation, "."
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1 and model(inner[0]):
            return inner[0], "."
    if origin is list and len(args) == 1 and model(args[0]):
        return args[0], "[]."
    return None


def params_rows(model: type, *, searchable: bool, prefix: str = "") -> list[str]:
    """One table row per field of the pydantic ``model`` (a nested model's fields follow, dotted)."""
    comments = _comments(model)
    rows = []
    for name, field in model.model_fields.items():
        kind = _type(field.annotation)
        bounds = _bounds(field)
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        space = f"`{_value(extra['default_space'])}`" if extra.get("searchable") else ""
        text = " ".join(t for t in (_description(name, field, comments), _condition(model, name)) if t)
        nested = _nested_model(field.annotation)
        if nested is not None:
            kind = ("list of mappings" if nested[1] == "[]." else "mapping") + (" | null" if "None" in str(field.annotation) else "")
            text = " ".join(t for t in (text, _summary(nested[0]) if nested[0].__doc__ else "") if t)
        cells = [f"`{prefix}{name}`", f"`{kind}`" + (f" ({bounds})" if bounds else ""), _default(field)]
        if searchable:
            cells.append(space or "—")
        cells.append(text or "")
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        if nested is not None:
            rows += params_rows(nested[0], searchable=searchable, prefix=f"{prefix}{name}{nested[1]}")
    return rows


def _aliases(model: type) -> str:
    aliases = getattr(model, "ALIASES", {})
    if not aliases:
        return ""
    spelt = ", ".join(f"`{old}` → `{new}`" for old, new in aliases.items())
    return f"\n\nOlder spellings accepted: {spelt}.\n"


def _names(names: list[str]) -> str:
    return ", ".join(f"`{n}`" for n in names) or "—"


# ---------------------------------------------------------------------------------------------- tables


def passes_table() -> str:
    """Every registered pass type: names, summary, searchable parameters (with their default spaces)."""
    rows = ["| type | also registered as | what | searchable parameters (default space) |", "|---|---|---|---|"]
    for type_name, (cls, aliases) in registered_passes().items():
        spaces = cls.Params.searchable_fields()
        searched = "; ".join(f"`{k}` `{_value(v)}`" for k, v in spaces.items()) or "—"
        rows.append(f"| `{type_name}` | {_names(aliases)} | {_cell(_summary(cls))} | {_cell(searched)} |")
    return "\n".join(rows) + "\n"


def _generated_from(cls: type, aliases: list[str]) -> str:
    """A generated table's first line: the class it is read from, and its other registered names."""
    return f"*Generated from `{cls.__module__}.{cls.__name__}`*" + (f" (also registered as {_names(aliases)})" if aliases else "")


def pass_table(name: str) -> str:
    """One pass type's parameters (its ``Params`` model), from the code."""
    passes = registered_passes()
    found = _find(name, passes, "pass type")
    cls, aliases = passes[found]
    head = _generated_from(cls, aliases)
    fields = cls.Params.model_fields
    if not fields:
        return head + ". No parameters.\n"
    rows = ["| parameter | type | default | searchable (default space) | description |", "|---|---|---|---|---|"]
    rows += params_rows(cls.Params, searchable=True)
    return head + ".\n\n" + "\n".join(rows) + _aliases(cls.Params) + "\n"


def metrics_table() -> str:
    """Every registered metric type: names, summary, its declared sub-types."""
    rows = ["| type | also registered as | what | sub-types |", "|---|---|---|---|"]
    for type_name, (cls, aliases) in registered_metrics().items():
        subs = _names(list(cls.SUB_TYPES)) if cls.SUB_TYPES else "named by the config (none declared)"
        rows.append(f"| `{type_name}` | {_names(aliases)} | {_cell(_summary(cls))} | {subs} |")
    return "\n".join(rows) + "\n"


def metric_table(name: str) -> str:
    """One metric type's sub-types (unit, direction, label, kind) and ``user_config`` fields, from the code."""
    metrics = registered_metrics()
    found = _find(name, metrics, "metric type")
    cls, aliases = metrics[found]
    out = [_generated_from(cls, aliases) + f"; metric version {cls.version}"
           + ("; measured once per model structure" if cls.per_structure else "") + "."]
    if cls.SUB_TYPES:
        rows = ["| sub-type | unit | higher is better | label | kind |", "|---|---|---|---|---|"]
        for sub, info in cls.SUB_TYPES.items():
            rows.append(f"| `{sub}` | {_cell(info.unit) or '—'} | {'yes' if info.higher_is_better else 'no'} | {_cell(info.label)} "
                        f"| `{info.kind}` |")
        out.append("\n".join(rows))
        if cls.ALIASES:
            out.append("Sub-type aliases: " + ", ".join(f"`{a}` → `{c}`" for a, c in cls.ALIASES.items()) + ".")
    else:
        out.append("No fixed sub-types: the config names them.")
    if cls.Params.model_fields:
        rows = ["| `user_config` key | type | default | description |", "|---|---|---|---|"]
        rows += params_rows(cls.Params, searchable=False)
        out.append("\n".join(rows))
    else:
        out.append("No `user_config` keys.")
    return "\n\n".join(out) + "\n"


def _find(name: str, entries: dict[str, Any], what: str) -> str:
    for type_name in entries:
        if type_name.lower() == name.lower():
            return type_name
    raise KeyError(f"unknown {what} {name!r} in a docs marker (known: {', '.join(entries)})")


def policies_table() -> str:
    """Every registered selection policy (``autotune.selection.policies.POLICIES``): its name and what it picks."""
    from autotune.selection.policies import POLICIES

    rows = ["| policy | class | picks | its settings (`engine.selection.options`, `--option`) |", "|---|---|---|---|"]
    for name, cls in POLICIES.items():
        settings = ", ".join(f"`{key}`" for key in cls.Options.model_fields) or "none"
        rows.append(f"| `{name}` | `{cls.__module__}.{cls.__name__}` | {_cell(_rst(getattr(cls, 'help', '') or _summary(cls)))} "
                    f"| {settings} |")
    return "\n".join(rows) + "\n"


# config marker argument -> the schema model of that part of the config (its keys as a config writes them)
CONFIG_PARTS = {"engine": "EngineConfig", "input_model": "InputModelConfig", "data_config": "DataConfig", "metric": "MetricConfig"}


def config_table(part: str) -> str:
    """The keys of one part of the config (``engine``, ``input_model``, a ``metric``), from ``autotune.config.schema``."""
    if part not in CONFIG_PARTS:
        raise KeyError(f"docs marker 'autotune:config {part}': unknown part (known: {', '.join(CONFIG_PARTS)})")
    from autotune.config import schema

    model = getattr(schema, CONFIG_PARTS[part])
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    rows += params_rows(model, searchable=False)
    return f"*Generated from `autotune.config.schema.{model.__name__}`*.\n\n" + "\n".join(rows) + "\n"


def include(path: str) -> str:
    """A Markdown file of the repository (``bench/README.md``), its own top heading left out (the page has one)."""
    file = (ROOT / path).resolve()
    if ROOT not in file.parents or not file.is_file() or file.suffix != ".md":
        raise KeyError(f"docs marker 'autotune:include {path}': no such Markdown file in the repository")
    text = file.read_text(encoding="utf-8")
    first, _, rest = text.partition("\n")
    return rest.lstrip("\n") if first.startswith("# ") else text


# ---------------------------------------------------------------------------------------------- markers

# marker name -> (builder, whether it takes an argument)
BUILDERS: dict[str, tuple[Callable[..., str], bool]] = {
    "passes": (passes_table, False),
    "pass": (pass_table, True),
    "metrics": (metrics_table, False),
    "metric": (metric_table, True),
    "policies": (policies_table, False),
    "config": (config_table, True),
    "include": (include, True),
}


def _parse(text: str) -> tuple[str, str | None]:
    match = MARKER.fullmatch(text)
    return (match["name"], match["arg"]) if match else (" ".join(text.split()), None)


def markers(markdown: str) -> list[tuple[str, str | None]]:
    """The (name, argument) of every ``<!-- autotune:... -->`` marker in ``markdown`` (a malformed one: its whole
    text as the name, which no builder has)."""
    return [_parse(m.group(0)) for m in ANY_MARKER.finditer(markdown)]


def check_marker(name: str, arg: str | None) -> None:
    """Raise ``KeyError`` for a marker the hook does not know (a wrong name, a missing or extra argument, an
    argument naming no registered type)."""
    if name not in BUILDERS:
        raise KeyError(f"unknown docs marker 'autotune:{name}' (known: {', '.join(BUILDERS)})")
    builder, takes_arg = BUILDERS[name]
    if takes_arg != (arg is not None):
        needs = "needs an argument (a type name, a part or a path)" if takes_arg else "takes no argument"
        raise KeyError(f"docs marker 'autotune:{name}' {needs}")
    if name in ("include", "config"):
        builder(arg)
    elif arg is not None:
        _find(arg, registered_passes() if name == "pass" else registered_metrics(), f"{name} type")


def expand(markdown: str) -> str:
    """``markdown`` with every marker replaced by its table (an unknown marker raises ``KeyError``)."""

    def table(match: re.Match[str]) -> str:
        name, arg = _parse(match.group(0))
        check_marker(name, arg)
        builder, takes_arg = BUILDERS[name]
        return "\n" + (builder(arg) if takes_arg else builder()) + "\n"

    return ANY_MARKER.sub(table, markdown)
