"""Read a config file (YAML or JSON), convert older shapes, resolve paths and names, validate against
the schema. The cross-checks against passes, metric types and the model, and ``load_config``, are in
``autotune.config_checks`` (they sit above the passes and the evaluators)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from autotune.config import legacy
from autotune.config.errors import join_path, validate_model
from autotune.config.schema import (
    CandidateModelConfig,
    DataConfig,
    EngineConfig,
    EvaluatorConfig,
    InputModelConfig,
    PassConfig,
    RunConfig,
)
from autotune.errors import ConfigError

# The built-in evaluators and search spaces (``evaluators: tone-accuracy-latency``, ``search_space:
# lora-default``) ship as package data, so that an installed wheel finds them from any folder. The
# top-level evaluators/ and search_spaces/ folders of a checkout are byte-identical copies for reading
# (tests/test_packaging.py keeps them so).
BUILTIN_ROOT = resources.files("autotune") / "builtin"
log = logging.getLogger("autotune")


def read_mapping(path: Path, *, what: str = "config") -> dict[str, Any]:
    """Parse a YAML/JSON file into a mapping; every failure is a one-line error naming the file."""
    if not path.is_file():
        raise ConfigError(str(path), f"no such {what} file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise ConfigError(str(path), f"not UTF-8 text at line {line} (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror}") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(str(path), f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(str(path), f"invalid YAML{where}: {problem}") from None
    if data is None:
        raise ConfigError(str(path), f"the {what} file is empty")
    if not isinstance(data, dict):
        raise ConfigError(str(path), f"expected a mapping at the top of the {what}, got {type(data).__name__}")
    return data


def find_named(folder: str, name: str, base: Path) -> Path | None:
    """``<folder>/<name>.yaml`` beside the config, above it, in the working folder, else autotune's built-in one."""
    candidates = [base / folder, base.parent / folder, Path.cwd() / folder, Path(str(BUILTIN_ROOT / folder))]
    for directory in candidates:
        for suffix in (".yaml", ".yml", ".json"):
            path = directory / f"{name}{suffix}"
            if path.is_file():
                return path
    return None


def _resolve(base: Path, value: Any) -> Any:
    if isinstance(value, str) and value and "://" not in value:
        path = Path(value).expanduser()
        return str(path if path.is_absolute() else (base / path).resolve())
    return value


def _validate_located(model: type, located: legacy.Located) -> Any:
    try:
        return validate_model(model, dict(located), located.prefix)
    except ConfigError as exc:
        rest = exc.where[len(located.prefix) + 1:] if exc.where.startswith(located.prefix + ".") else ""
        head, _, tail = rest.partition(".")
        head_key = head.split("[")[0]
        if head_key in located.paths:
            where = located.paths[head_key] + head[len(head_key):] + ("." + tail if tail else "")
            raise ConfigError(where, exc.message) from None
        raise


def read_source(source: str | Path | dict[str, Any], *, base_dir: Path | None = None) -> tuple[dict[str, Any], Path]:
    """The raw mapping of a config file (or an already-parsed mapping) and the folder its paths are relative to."""
    if isinstance(source, dict):
        return source, (base_dir or Path.cwd()).resolve()
    path = Path(source).expanduser()
    return read_mapping(path), path.resolve().parent


def parse_config(raw: dict[str, Any], base: Path, *,
                 pass_aliases: Callable[[str, str], dict[str, str]]) -> tuple[RunConfig, dict[str, str]]:
    """The config, converted from older shapes and validated against the schema (the cross-checks
    against passes, metric types and the model are ``autotune.config_checks``'), and where each
    evaluator was written. ``pass_aliases(type, where)``: a pass type's older parameter spellings."""
    legacy.check_top_keys(raw)
    input_models: list[CandidateModelConfig] = []
    if isinstance(raw["input_model"], list):  # base models the study chooses among
        input_models = _candidates(raw["input_model"], base)
        input_model = input_models[0].as_input_model()
        if len(input_models) == 1:  # one candidate is the single-model form, exactly
            input_models = []
    else:
        input_model = _input_model(raw["input_model"], "input_model", base)

    raw_data = raw.get("data_configs") or []
    if not isinstance(raw_data, list):
        raise ConfigError("data_configs", "expected a list of data configs")
    data_located = [legacy.convert_data_config(d, i) for i, d in enumerate(raw_data)]

    passes: dict[str, PassConfig] = {}
    raw_passes = raw.get("passes") or {}
    if not isinstance(raw_passes, dict):
        raise ConfigError("passes", "expected a mapping of pass name -> pass")
    for name, raw_pass in raw_passes.items():
        if isinstance(raw_pass, list):  # a pass group: alternatives the search chooses among
            if not raw_pass:
                raise ConfigError(f"passes.{name}", "an empty list of alternatives")
            options = []
            for i, option in enumerate(raw_pass):
                otype, oparams, oorigin = legacy.convert_pass(str(name), option, path=f"passes.{name}[{i}]")
                options.append(PassConfig(type=otype, params=oparams, origin=oorigin))
            passes[str(name)] = PassConfig(type="alternatives", origin=f"passes.{name}", alternatives=options)
            continue
        ptype, params, origin = legacy.convert_pass(str(name), raw_pass)
        if "eval_dataset_size" in params:  # the seed puts the held-out size on the LoRA pass
            target = params.get("train_data_config") or (data_located[0].get("name") if len(data_located) == 1 else None)
            for located in data_located:
                if located.get("name") == target:
                    if "eval_dataset_size" in located and located["eval_dataset_size"] != params["eval_dataset_size"]:
                        raise ConfigError(join_path(origin, "eval_dataset_size"), "disagrees with the data config's eval_dataset_size")
                    located.put("eval_dataset_size", params["eval_dataset_size"], join_path(origin, "eval_dataset_size"))
        passes[str(name)] = PassConfig(type=ptype, params=params, origin=origin)

    data_configs: list[DataConfig] = []
    for located in data_located:
        if "data_files" in located:
            files = located["data_files"]
            located["data_files"] = [_resolve(base, f) for f in files] if isinstance(files, list) else _resolve(base, files)
        data_configs.append(_validate_located(DataConfig, located))
    from autotune.template import template_of  # config and templates are one layer; template imports the schema

    seen_names: set[str] = set()
    for located, data in zip(data_located, data_configs, strict=True):
        if data.name in seen_names:
            raise ConfigError(located.path_of("name"), f"data config name '{data.name}' is used twice")
        seen_names.add(data.name)
        template_of(data, where=located.prefix, path_of=located.path_of)  # refused here, before anything reads the files
        _warn_inert_data_keys(located, data)

    engine_located = legacy.convert_engine(raw)
    for key in ("cache_dir", "output_dir"):
        if key in engine_located:
            engine_located[key] = _resolve(base, engine_located[key])
    engine = _validate_located(EngineConfig, engine_located)
    if "cache_dir" not in engine_located:
        engine.cache_dir = (base / engine.cache_dir).resolve()
    if "output_dir" not in engine_located:
        engine.output_dir = (base / engine.output_dir).resolve()

    if engine.search_strategy and engine.search_strategy.search_space:
        _merge_search_space(passes, engine.search_strategy.search_space, base, pass_aliases)
    evaluators, evaluator_origins = _load_evaluators(raw.get("evaluators") or {}, engine, base)
    config = RunConfig(
        input_model=input_model,
        input_models=input_models,
        data_configs=data_configs,
        passes=passes,
        evaluators=evaluators,
        engine=engine,
        config_dir=base,
    )
    return config, evaluator_origins


def _input_model(raw: Any, where: str, base: Path) -> InputModelConfig:
    """One model (``input_model``, or one candidate of a list at ``where``), its local path resolved."""
    from autotune.models.fetch import find_demo
    from autotune.models.hub import looks_like_hub_id

    model = legacy.convert_input_model(raw, where)
    model_path = model.get("model_path")
    # A path that exists is a path; else an org/name id (or the demo's name) stays as written, for the Hub.
    if isinstance(model_path, str) and model_path and (
            (base / model_path).exists() or not (looks_like_hub_id(model_path) or find_demo(model_path))):
        model["model_path"] = _resolve(base, model_path)
    return _validate_located(InputModelConfig, model)


def default_base_name(spec: InputModelConfig) -> str:
    """A candidate's name when none is given: a GGUF's stem, else the folder's name or an id's ``name``."""
    if spec.gguf_file:
        return Path(spec.gguf_file).stem
    return Path(str(spec.model_path)).name or str(spec.model_path)


def _candidates(raw: list[Any], base: Path) -> list[CandidateModelConfig]:
    """The candidates of a list ``input_model`` (a mapping each, or a bare id/path), each named; a name
    used twice is refused (the study tells bases apart by name)."""
    if not raw:
        raise ConfigError("input_model", "an empty list of candidates; give one model or several")
    out: list[CandidateModelConfig] = []
    for i, item in enumerate(raw):
        where = f"input_model[{i}]"
        body = {"model_path": item} if isinstance(item, str) else item
        if not isinstance(body, dict):
            raise ConfigError(where, f"expected a mapping (type, model_path, name...) or a model id or path, got {item!r}")
        body = dict(body)
        name = body.pop("name", None)
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ConfigError(f"{where}.name", f"expected a non-empty string, got {name!r}")
        spec = _input_model(body, where, base)
        chosen = name.strip() if name is not None else default_base_name(spec)
        for j, earlier in enumerate(out):
            if earlier.name == chosen:
                given = f"{where}.name" if name is not None else where
                raise ConfigError(given, f"candidate name '{chosen}' is used twice (input_model[{j}] has it too); "
                                         "give each candidate its own name")
        out.append(CandidateModelConfig(**spec.model_dump(), name=chosen))
    return out


# Olive data keys autotune accepts for compatibility but cannot apply: key -> (the value autotune's
# behaviour matches, why another value has no effect). Set to that value, the key is honoured as is.
INERT_DATA_KEYS = {
    "corpus_strategy": ("line-by-line", "each row is one example (rows are never joined: the answer of a row must stay "
                                        "with its prompt)"),
    "pad_to_max_len": (False, "each batch is padded to its own longest row, which gives the same loss with less compute"),
    "use_attention_mask": (True, "padding is always masked out (without the mask, pad tokens would change the loss)"),
}


def _warn_inert_data_keys(located: legacy.Located, data: DataConfig) -> None:
    """Warn (once per config load) about a data key set to a value autotune does not apply."""
    for key, (honoured, why) in INERT_DATA_KEYS.items():
        value = getattr(data, key)
        if key in data.model_fields_set and value != honoured:
            shown = str(value).lower() if isinstance(value, bool) else value
            log.warning("%s: %s has no effect here: %s", located.path_of(key), shown, why)


def _merge_search_space(passes: dict[str, PassConfig], name: str, base: Path,
                        pass_aliases: Callable[[str, str], dict[str, str]]) -> None:
    """Lay a reusable space from search_spaces/<name>.yaml over the passes' own parameters."""
    path = find_named("search_spaces", name, base)
    if path is None:
        raise ConfigError("engine.search_strategy.search_space", f"no search space named '{name}' (looked for search_spaces/{name}.yaml)")
    space = read_mapping(path, what="search space")
    space_passes = space.get("passes")
    if not isinstance(space_passes, dict):
        raise ConfigError(f"{path}: passes", "expected a mapping of pass name -> {parameter: values}")
    for pass_name, values in space_passes.items():
        if pass_name not in passes:
            raise ConfigError(f"{path}: passes.{pass_name}", f"the config has no pass named '{pass_name}' (has: {list(passes)})")
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: passes.{pass_name}", "expected a mapping of parameter -> values")
        target = passes[pass_name]
        aliases = pass_aliases(target.type, f"passes.{pass_name}.type")
        for key, value in values.items():
            canonical = aliases.get(key, key)
            for existing in [k for k in target.params if aliases.get(k, k) == canonical]:
                del target.params[existing]
            target.params[key] = value


def _load_evaluators(raw: Any, engine: EngineConfig, base: Path) -> tuple[dict[str, EvaluatorConfig], dict[str, str]]:
    """The evaluators, and where each was written (``evaluators.<name>`` or ``<file>:``) for error messages."""
    if not isinstance(raw, dict):
        raise ConfigError("evaluators", "expected a mapping of evaluator name -> {metrics: [...]}")
    evaluators: dict[str, EvaluatorConfig] = {}
    origins: dict[str, str] = {}
    for name, body in raw.items():
        path = join_path("evaluators", str(name))
        if isinstance(body, str):  # a reference to evaluators/<name>.yaml
            evaluators[str(name)], file = _evaluator_file(body, path, base)
            origins[str(name)] = f"{file}:"
        else:
            evaluators[str(name)] = validate_model(EvaluatorConfig, body, path)
            origins[str(name)] = path
    if engine.evaluator and engine.evaluator not in evaluators:
        evaluators[engine.evaluator], file = _evaluator_file(engine.evaluator, "engine.evaluator", base)
        origins[engine.evaluator] = f"{file}:"
    if engine.evaluator is None and len(evaluators) == 1:
        engine.evaluator = next(iter(evaluators))
    return evaluators, origins


def _evaluator_file(name: str, where: str, base: Path) -> tuple[EvaluatorConfig, Path]:
    """The evaluator in ``evaluators/<name>.yaml`` and that file; an error in it names the file and the key path inside it."""
    path = find_named("evaluators", name, base)
    if path is None:
        raise ConfigError(where, f"no evaluator named '{name}' in the config or in evaluators/{name}.yaml")
    try:
        return validate_model(EvaluatorConfig, read_mapping(path, what="evaluator"), ""), path
    except ConfigError as exc:
        if exc.where == str(path):
            raise
        raise ConfigError(f"{path}: {exc.where}", exc.message) from None
