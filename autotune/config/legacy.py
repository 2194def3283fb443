"""Convert the shapes users write (the seed sample, Olive's older and newer run configs) to the
canonical dict validated by :mod:`autotune.config.schema`.

Each converter records where every canonical key came from in the user's file, so an error about a
canonical key still names the key path the user wrote (``passes.lora.config.lora_r``).
"""

from __future__ import annotations

from typing import Any

from autotune.config.errors import join_path
from autotune.errors import ConfigError, did_you_mean

ENGINE_KEYS = {
    "search_strategy", "execution_providers", "cache_dir", "output_dir", "log_severity_level",
    "evaluator", "evaluate_input_model", "storage", "study_name", "selection", "trial_timeout",
    "cache_max_gb", "artifact_store", "device", "pytorch_reference", "host", "target", "clean_cache",
    "clean_evaluation_cache", "plot_pareto_frontier",
}
# Olive keys with no meaning here; accepted so an Olive config runs unchanged.
IGNORED_ENGINE_KEYS = {"host", "target", "clean_cache", "clean_evaluation_cache", "plot_pareto_frontier"}
TOP_KEYS = {"input_model", "data_configs", "passes", "evaluators", "engine", "systems", "description"}
UNSUPPORTED_SYSTEMS = {"AzureML", "Docker", "PythonEnvironment", "IsolatedORT"}
PASS_META_KEYS = {"disable_search", "evaluate", "host", "output_name"}


class Located(dict):
    """A canonical dict plus ``paths``: canonical key -> the user's key path."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix
        self.paths: dict[str, str] = {}

    def put(self, key: str, value: Any, path: str) -> None:
        self[key] = value
        self.paths[key] = path

    def path_of(self, key: str) -> str:
        return self.paths.get(key, join_path(self.prefix, key))


def _mapping(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        kind = "a list" if isinstance(value, list) else repr(value)
        raise ConfigError(path, f"expected a mapping, got {kind}")
    return value


def _take(out: Located, src: dict[str, Any], path: str, rename: dict[str, str] | None = None) -> None:
    rename = rename or {}
    for key, value in src.items():
        out.put(rename.get(key, key), value, join_path(path, key))


def convert_input_model(raw: Any, path: str = "input_model") -> Located:
    raw = _mapping(raw, path)
    out = Located(path)
    kind = raw.get("type", "HfModel")
    if kind not in ("PyTorchModel", "HfModel", "GGUFModel"):
        raise ConfigError(
            join_path(path, "type"),
            f"expected one of 'HfModel', 'PyTorchModel', 'GGUFModel', got \"{kind}\""
            + did_you_mean(str(kind), ["HfModel", "PyTorchModel", "GGUFModel"]),
        )
    body = {k: v for k, v in raw.items() if k != "type"}
    body_path = path
    if "config" in body:
        extra = set(body) - {"config"}
        if extra:
            raise ConfigError(join_path(path, sorted(extra)[0]), "unknown key beside 'config'")
        body = _mapping(body["config"], join_path(path, "config"))
        body_path = join_path(path, "config")
    if "hf_config" in body:
        hf_path = join_path(body_path, "hf_config")
        hf = _mapping(body["hf_config"], hf_path)
        for key, value in hf.items():
            if key == "model_name":
                out.put("model_path", value, join_path(hf_path, key))
            elif key == "model_loading_args":
                _loading_args(out, value, join_path(hf_path, key))
            elif key == "task":
                out.put("task", value, join_path(hf_path, key))
            else:
                out.put(key, value, join_path(hf_path, key))
        body = {k: v for k, v in body.items() if k != "hf_config"}
    for key, value in body.items():
        if key in ("model_loading_args", "load_kwargs"):
            _loading_args(out, value, join_path(body_path, key))
        else:
            out.put(key, value, join_path(body_path, key))
    model_path = str(out.get("model_path", ""))
    if model_path.endswith(".gguf") and "gguf_file" not in out:
        # A GGUF file named directly: split into folder + file, as transformers wants.
        folder, _, name = model_path.rpartition("/")
        out.put("model_path", folder or ".", out.path_of("model_path"))
        out.put("gguf_file", name, out.path_of("model_path"))
    if kind == "GGUFModel" and not out.get("gguf_file"):
        from autotune.models.fetch import find_demo

        if not find_demo(model_path):
            raise ConfigError(join_path(path, "gguf_file"), "a GGUFModel needs gguf_file (or a model_path that ends in .gguf)")
    out.put("type", "GGUFModel" if out.get("gguf_file") else "HfModel", join_path(path, "type"))
    return out


def _loading_args(out: Located, value: Any, path: str) -> None:
    args = _mapping(value, path)
    for key, val in args.items():
        if key == "trust_remote_code":
            out.put("trust_remote_code", val, join_path(path, key))
        elif key == "revision":
            out.put("revision", val, join_path(path, key))
        elif key in ("torch_dtype", "dtype"):
            continue  # autotune loads fp32 on CPU
        else:
            raise ConfigError(join_path(path, key), f"unknown key{did_you_mean(key, ['trust_remote_code', 'revision'])}")


def convert_data_config(raw: Any, index: int) -> Located:
    path = f"data_configs[{index}]"
    raw = _mapping(raw, path)
    out = Located(path)
    for key, value in raw.items():
        key_path = join_path(path, key)
        if key in ("load_dataset_config", "pre_process_data_config"):
            section = _mapping(value, key_path)
            section = dict(section)
            section.pop("type", None)  # Olive names the component; there is one kind here
            params = section.pop("params", None)
            if params is not None:
                _take(out, _mapping(params, join_path(key_path, "params")), join_path(key_path, "params"))
            _take(out, section, key_path)
        elif key in ("user_script", "script_dir", "dataloader_config", "post_process_data_config"):
            raise ConfigError(key_path, "is not supported: autotune reads local files through a text template")
        else:
            out.put(key, value, key_path)
    return out


def convert_pass(name: str, raw: Any, *, path: str | None = None) -> tuple[str, dict[str, Any], str]:
    """(type, params, origin) of one pass, parameters taken from ``config`` or beside ``type``."""
    path = path or join_path("passes", name)
    raw = _mapping(raw, path)
    if "type" not in raw:
        raise ConfigError(join_path(path, "type"), "required key is missing")
    rest = {k: v for k, v in raw.items() if k not in PASS_META_KEYS and k != "type"}
    if "config" in rest:
        beside = set(rest) - {"config"}
        if beside:
            raise ConfigError(join_path(path, sorted(beside)[0]), "put pass parameters either under 'config' or beside 'type', not both")
        params = _mapping(rest["config"] or {}, join_path(path, "config"))
        return str(raw["type"]), dict(params), join_path(path, "config")
    return str(raw["type"]), rest, path


def convert_search_strategy(value: Any, path: str) -> Any:
    if value is False or value is None or value is True:
        return value
    value = dict(_mapping(value, path))
    # canonical key -> the key the user wrote, for errors about a renamed Olive key
    spelt: dict[str, str] = {}
    # Olive <= 0.6: search_algorithm + search_algorithm_config.num_samples
    algorithm = value.pop("search_algorithm", None)
    if algorithm is not None and "sampler" not in value:
        value["sampler"] = {"exhaustive": "grid"}.get(algorithm, algorithm) if isinstance(algorithm, str) else algorithm
        spelt["sampler"] = "search_algorithm"
    algo_config = value.pop("search_algorithm_config", None)
    if algo_config is not None:
        algo_path = join_path(path, "search_algorithm_config")
        algo_config = _mapping(algo_config, algo_path)
        _known_keys(algo_config, algo_path, {"num_samples", "seed"})
        for key, canonical in (("num_samples", "max_samples"), ("seed", "seed")):
            if key in algo_config and canonical not in value:
                value[canonical] = algo_config[key]
                spelt[canonical] = f"search_algorithm_config.{key}"
    if "num_samples" in value:
        num_samples = value.pop("num_samples")
        if "max_samples" not in value:
            value["max_samples"] = num_samples
            spelt["max_samples"] = "num_samples"
    if spelt:  # validate here, where the Olive spelling is known
        from autotune.config.errors import validate_model
        from autotune.config.schema import SearchStrategyConfig

        try:
            validate_model(SearchStrategyConfig, value, path)
        except ConfigError as exc:
            for canonical, user in spelt.items():
                key_path = join_path(path, canonical)
                if exc.where == key_path or exc.where.startswith((key_path + ".", key_path + "[")):
                    raise ConfigError(join_path(path, user) + exc.where[len(key_path):], exc.message) from None
            raise
    return value


def convert_engine(raw: dict[str, Any]) -> Located:
    out = Located("engine")
    engine = _mapping(raw.get("engine", {}) or {}, "engine")
    for key, value in engine.items():
        out.put(key, value, join_path("engine", key))
    for key in ENGINE_KEYS & set(raw):  # Olive's newer configs put engine keys at the top
        if key in out:
            raise ConfigError(key, f"is set both at the top level and under 'engine.{key}'")
        out.put(key, raw[key], key)
    systems = raw.get("systems") or {}
    for name, system in _mapping(systems, "systems").items():
        spath = join_path("systems", name)
        system = _mapping(system, spath)
        stype = system.get("type", "LocalSystem")
        if not isinstance(stype, str):
            raise ConfigError(join_path(spath, "type"), f"expected a string, got {_kind(stype)}")
        if stype in UNSUPPORTED_SYSTEMS:
            raise ConfigError(
                join_path(spath, "type"),
                f"{stype} systems are not supported: autotune runs on this machine (use LocalSystem or remove 'systems')",
            )
        if stype != "LocalSystem":
            raise ConfigError(join_path(spath, "type"), f"expected \"LocalSystem\", got \"{stype}\"")
        providers, providers_path = _system_providers(system, spath)
        if providers and "execution_providers" not in out:
            out.put("execution_providers", providers, providers_path)
    for key in IGNORED_ENGINE_KEYS & set(out):
        del out[key]
    if "search_strategy" in out:
        out["search_strategy"] = convert_search_strategy(out["search_strategy"], out.path_of("search_strategy"))
    return out


def _system_providers(system: dict[str, Any], spath: str) -> tuple[list[str], str]:
    """The execution providers of a LocalSystem's accelerators, each checked at its own key path."""
    from autotune.config.schema import PROVIDERS

    _known_keys(system, spath, {"type", "config", "accelerators", "hf_token"})
    body, body_path = system, spath
    if "config" in system:
        body_path = join_path(spath, "config")
        body = _mapping(system["config"] or {}, body_path)
        _known_keys(body, body_path, {"accelerators", "hf_token"})
    acc_path = join_path(body_path, "accelerators")
    accelerators = body.get("accelerators") or []
    if not isinstance(accelerators, list):
        raise ConfigError(acc_path, f"expected a list of accelerators, got {_kind(accelerators)}")
    providers: list[str] = []
    for i, acc in enumerate(accelerators):
        apath = join_path(acc_path, i)
        acc = _mapping(acc, apath)
        _known_keys(acc, apath, {"device", "execution_providers", "memory"})
        eps = acc.get("execution_providers") or []
        ep_path = join_path(apath, "execution_providers")
        if not isinstance(eps, list):
            raise ConfigError(ep_path, f"expected a list, got {_kind(eps)}")
        for j, ep in enumerate(eps):
            if ep not in PROVIDERS:
                raise ConfigError(
                    join_path(ep_path, j),
                    f"expected one of {', '.join(PROVIDERS)}, got {_kind(ep)}{did_you_mean(str(ep), PROVIDERS)}",
                )
            providers.append(ep)
    if len(accelerators) == 1:
        return providers, join_path(acc_path, 0, "execution_providers")
    return providers, acc_path


def _kind(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _known_keys(section: dict[str, Any], path: str, known: set[str]) -> None:
    for key in section:
        if key not in known:
            raise ConfigError(join_path(path, str(key)), f"unknown key{did_you_mean(str(key), sorted(known))}")


def check_top_keys(raw: dict[str, Any]) -> None:
    for key in raw:
        if key not in TOP_KEYS and key not in ENGINE_KEYS:
            raise ConfigError(str(key), f"unknown key{did_you_mean(str(key), sorted(TOP_KEYS | ENGINE_KEYS))}")
    if "input_model" not in raw:
        raise ConfigError("input_model", "required key is missing")
