"""lm-evaluation-harness tasks as an ``lm_eval`` metric names them: found, built offline first, fingerprinted.

- Names are looked up in ``include_path`` first (its own index is fast); lm-eval's ~15,000 built-in names are
  indexed only when a name is not there. An unknown name is one line with "did you mean".
- A relative ``dataset_kwargs.data_files`` in a task YAML is read relative to that YAML (as every path of an
  autotune config is relative to its file), not to the working directory.
- A task whose data set is on the Hugging Face Hub is read from the local datasets cache; it is downloaded
  only when the user has not asked for no Hub (``HF_HUB_OFFLINE``), as input models are
  (:mod:`autotune.models.hub`). Not cached and not reachable is one line naming the task and the data set.
- :func:`task_fingerprint` is what of the tasks enters a measurement's cache key: lm-eval's version, the task
  files' and local data files' contents, so an edited task YAML or data file is scored again.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.metadata as md
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotune.errors import ConfigError, did_you_mean
from autotune.models.hub import hub_reachable

__all__ = ["LOCAL_BUILDERS", "TASK_FILES", "TaskSpec", "build_tasks", "find_tasks", "leaf_tasks", "reported_metrics", "require_lm_eval",
           "task_fingerprint"]

# What defines a task in an include_path folder (hashed for the cache key with the data files its YAMLs name).
TASK_FILES = frozenset({".yaml", ".yml", ".py", ".jinja", ".j2"})
# datasets' packaged builders that read local files: a task on them never reaches the Hub.
LOCAL_BUILDERS = frozenset({"json", "csv", "parquet", "text", "arrow", "pandas"})


@dataclass
class TaskSpec:
    """One requested name: what lm-eval is given (the name, or a task YAML's config with local paths made
    absolute), and the YAML it came from (None: a group, a tag or a Python task, given by name)."""

    name: str
    spec: str | dict[str, Any]
    yaml_path: Path | None


def _include(include_path: str | None, base_dir: Path) -> Path | None:
    if not include_path:
        return None
    path = Path(include_path).expanduser()
    return path if path.is_absolute() else (base_dir / path).resolve()


def find_tasks(tasks: list[str], *, include_path: str | None, base_dir: Path, where: str) -> tuple[Any, list[TaskSpec]]:
    """lm-eval's TaskManager and each name's spec; an unknown name or a missing include_path is a ConfigError."""
    TaskManager = require_lm_eval(where).TaskManager  # noqa: N806 (lm-eval's class)

    include = _include(include_path, base_dir)
    if include is not None and not include.is_dir():
        raise ConfigError(f"{where}.include_path", f"no folder {include} (a folder of task YAML files)")
    manager = TaskManager(include_path=str(include), include_defaults=False) if include is not None else None
    if manager is None or any(name not in manager.task_index for name in tasks):
        manager = TaskManager(include_path=str(include) if include is not None else None)
    specs = []
    for j, name in enumerate(tasks):
        entry = manager.task_index.get(name)
        if entry is None:
            hint = did_you_mean(name, manager.all_tasks)
            raise ConfigError(f"{where}.tasks[{j}]", f"no lm-evaluation-harness task '{name}'{hint}"
                                                     + ("" if include is not None else " (a folder of your own task YAMLs: include_path)"))
        yaml_path = Path(entry.yaml_path) if entry.yaml_path and entry.kind.name == "TASK" else None
        try:
            spec = _local_config(yaml_path) if yaml_path else name
        except (ImportError, AttributeError, OSError, ValueError) as exc:  # a !function that does not load, a bad YAML
            raise ConfigError(f"{where}.tasks[{j}]", f"task '{name}' ({yaml_path}) does not load: {type(exc).__name__}: {exc}") from None
        specs.append(TaskSpec(name, spec, yaml_path))
    return manager, specs


def require_lm_eval(where: str) -> Any:
    """lm-eval's ``lm_eval.tasks`` module, or one line saying which extra provides it."""
    try:
        import lm_eval.tasks
    except ImportError:
        raise ConfigError(where, "the lm_eval metric needs lm-evaluation-harness: pip install -e \".[lm-eval]\" "
                                 "(the autotune-slm[lm-eval] extra)") from None
    return lm_eval.tasks


def _local_config(yaml_path: Path) -> dict[str, Any]:
    """The task's full config with relative local data files made absolute against its YAML's folder."""
    from lm_eval.tasks._yaml_loader import load_yaml

    config = copy.deepcopy(load_yaml(yaml_path, resolve_func=True))
    kwargs = config.get("dataset_kwargs") or {}
    if config.get("dataset_path") in LOCAL_BUILDERS and "data_files" in kwargs:
        kwargs["data_files"] = _absolute(kwargs["data_files"], yaml_path.parent)
        config["dataset_kwargs"] = kwargs
    return config


def _absolute(files: Any, folder: Path) -> Any:
    if isinstance(files, str):
        path = Path(files).expanduser()
        return files if path.is_absolute() or "://" in files else str((folder / path).resolve())
    if isinstance(files, list):
        return [_absolute(f, folder) for f in files]
    if isinstance(files, dict):
        return {k: _absolute(v, folder) for k, v in files.items()}
    return files


def _data_files(spec: TaskSpec) -> list[Path]:
    if not isinstance(spec.spec, dict):
        return []
    files = (spec.spec.get("dataset_kwargs") or {}).get("data_files")
    flat: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            flat.append(value)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)

    walk(files)
    return [Path(f) for f in flat]


def build_tasks(manager: Any, specs: list[TaskSpec], *, where: str) -> dict[str, Any]:
    """lm-eval's task dict for ``specs`` (their data read); a task's data that cannot be read is one line."""
    from lm_eval.tasks import get_task_dict

    built: dict[str, Any] = {}
    for j, spec in enumerate(specs):
        for path in _data_files(spec):
            if "://" not in str(path) and not any(c in str(path) for c in "*?[") and not path.is_file():
                raise ConfigError(f"{where}.tasks[{j}]", f"task '{spec.name}' reads {path}, which does not exist")
        try:
            with hub_reachable(datasets=True):
                built.update(get_task_dict([spec.spec], manager))
        except (ConnectionError, OSError, ValueError, ImportError) as exc:
            dataset = _dataset_of(manager, spec)
            if dataset is None or dataset in LOCAL_BUILDERS or not isinstance(exc, ConnectionError):
                what = f"the data set '{dataset}'" if dataset else "its data"
                raise ConfigError(f"{where}.tasks[{j}]", f"task '{spec.name}' could not read {what}: {type(exc).__name__}: {exc}") from None
            from autotune.models.hub import hub_offline

            why = "the Hub is off (HF_HUB_OFFLINE)" if hub_offline() else "the Hugging Face Hub could not be reached"
            raise ConfigError(f"{where}.tasks[{j}]", f"task '{spec.name}' reads the data set '{dataset}' from the Hugging Face Hub: "
                                                     f"it is not in the local datasets cache and {why}; run once where the Hub is "
                                                     "reachable to cache it") from None
    return built


def _dataset_of(manager: Any, spec: TaskSpec) -> str | None:
    if isinstance(spec.spec, dict):
        return spec.spec.get("dataset_path")
    entry = manager.task_index.get(spec.name)
    config = getattr(entry, "cfg", None) or {}
    return config.get("dataset_path")


def leaf_tasks(task_dict: dict[Any, Any]) -> dict[str, Any]:
    """Every task of a (nested) task dict by name: groups opened."""
    out: dict[str, Any] = {}
    for key, value in task_dict.items():
        if isinstance(value, dict):
            out.update(leaf_tasks(value))
        else:
            out[getattr(key, "group_name", None) or str(key)] = value
    return out


def reported_metrics(task: Any) -> list[str]:
    """``metric,filter`` keys a built task reports (lm-eval's results keys)."""
    metrics = list(task.aggregation())
    filters = [f.name for f in getattr(task, "_filters", [])] or ["none"]
    return [f"{m},{f}" for f in filters for m in metrics]


def task_fingerprint(tasks: list[str], *, include_path: str | None, base_dir: Path) -> dict[str, Any]:
    """What of the tasks a cached score depends on beyond their names: lm-eval's version and the contents of
    the include_path folder's files and of the local data files its tasks read (without importing lm-eval)."""
    digest = hashlib.sha256()
    include = _include(include_path, base_dir)
    seen: set[Path] = set()
    if include is not None and include.is_dir():
        # The task definitions (YAML, their !function modules, templates), then the data files the YAMLs name:
        # nothing else a folder may hold (an include_path of "." holds the cache and the results too).
        for path in sorted(p for p in include.rglob("*") if p.is_file() and p.suffix in TASK_FILES and "__pycache__" not in p.parts):
            digest.update(str(path.relative_to(include)).encode() + b"\0" + path.read_bytes() + b"\0")
            seen.add(path.resolve())
        for yaml_path in sorted(p for p in include.rglob("*") if p.suffix in (".yaml", ".yml")):
            digest.update(_outside_data(yaml_path, seen))
    try:
        version = md.version("lm-eval")
    except md.PackageNotFoundError:
        version = None
    return {"lm_eval": version, "files": digest.hexdigest()}


def _outside_data(yaml_path: Path, seen: set[Path]) -> bytes:
    """Contents of the local data files a task YAML names (once each, wherever they are)."""
    import yaml

    try:
        config = yaml.load(yaml_path.read_text(), Loader=_lenient_loader())  # noqa: S506 (a SafeLoader)
    except (OSError, yaml.YAMLError):
        return b""
    if not isinstance(config, dict):
        return b""
    files = _data_files(TaskSpec("", {"dataset_kwargs": {"data_files": _absolute((config.get("dataset_kwargs") or {}).get("data_files"),
                                                                                 yaml_path.parent)}}, None))
    out = b""
    for path in files:
        resolved = path.resolve()
        if resolved not in seen and resolved.is_file():
            seen.add(resolved)
            out += str(resolved).encode() + b"\0" + resolved.read_bytes()
    return out


def _lenient_loader() -> type:
    """A safe YAML loader that reads lm-eval's tags (``!function utils.x``) as nothing."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    return Loader
