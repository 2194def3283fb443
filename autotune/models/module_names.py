"""A model's module names, read without loading its weights (for checks at ``validate``).

A Hugging Face folder: the tensor names in its safetensors headers (no torch import). A GGUF file: the
model transformers converts it into (what :mod:`autotune.models.gguf` does: the config from the GGUF's
metadata), built on the meta device, so no weight is read or allocated.
"""

from __future__ import annotations

import functools
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune.errors import ModelError

if TYPE_CHECKING:
    from autotune.models.source import InputSource

__all__ = ["ModuleNames", "architecture", "matrix_leaves", "model_file", "module_names"]


@dataclass(frozen=True)
class ModuleNames:
    """Every module name (dotted, as ``named_modules`` gives them) and the leaves that hold a weight matrix."""

    names: frozenset[str]
    matrices: tuple[str, ...]  # last name parts of the modules with a 2-D weight, sorted


def model_file(source: InputSource) -> Path | None:
    """The input model's folder or GGUF file when it is on this machine now (nothing downloaded): None
    for the demo model before its fetch, a Hub id not in the cache, or a path that does not exist (the
    run's preflight reports a missing model)."""
    from autotune.models.fetch import autotune_home

    if source.gguf is not None:
        return source.gguf if source.gguf.is_file() else None
    if source.folder is not None:
        # Without safetensors weights (pickle-only, or none) there are no names to read: the run's
        # model-file check refuses such a folder, naming it.
        usable = (source.folder / "config.json").is_file() and any(source.folder.glob("*.safetensors"))
        return source.folder if usable else None
    if source.demo is not None:
        fetched = autotune_home() / "models" / source.demo.name / source.demo.gguf_file
        return fetched if fetched.is_file() else None
    return None


def module_names(path: Path, *, trust_remote_code: bool = False) -> ModuleNames:
    """The module names of the model at ``path`` (a safetensors folder or a GGUF file)."""
    stat = path.stat()
    return _cached_names(path.resolve(), stat.st_size, stat.st_mtime_ns, trust_remote_code)


@functools.lru_cache(maxsize=8)
def _cached_names(path: Path, _size: int, _mtime: int, trust_remote_code: bool) -> ModuleNames:
    if path.is_dir():
        return _folder_names(path)
    return _gguf_names(path, trust_remote_code=trust_remote_code)


def _parents(weight_name: str) -> list[str]:
    """``a.b.c.weight`` -> ``a``, ``a.b``, ``a.b.c``: the modules that hold the tensor."""
    parts = weight_name.split(".")[:-1]
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _folder_names(folder: Path) -> ModuleNames:
    names: set[str] = set()
    matrices: set[str] = set()
    for file in sorted(folder.glob("*.safetensors")):
        for tensor, info in _safetensors_header(file).items():
            if tensor == "__metadata__" or not isinstance(info, dict):
                continue
            names.update(_parents(tensor))
            if tensor.endswith(".weight") and len(info.get("shape") or []) == 2:
                matrices.add(tensor.rsplit(".", 2)[-2])
    # A tied output layer is saved under the input embedding's name only; the module is still there.
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    if config.get("tie_word_embeddings", True) and "lm_head" not in names:
        names.add("lm_head")
        matrices.add("lm_head")
    return ModuleNames(frozenset(names), tuple(sorted(matrices)))


def _safetensors_header(file: Path) -> dict[str, object]:
    """The JSON header of a safetensors file (tensor name -> dtype, shape, offsets)."""
    try:
        with file.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > file.stat().st_size - 8:
                raise ValueError("header runs past the end of the file")
            header = json.loads(handle.read(length))
    except (struct.error, ValueError, OSError) as exc:
        raise ModelError(str(file), f"not a valid safetensors file: {exc}") from None
    if not isinstance(header, dict):
        raise ModelError(str(file), "not a valid safetensors file: its header is not a mapping")
    return header


def architecture(path: Path, *, trust_remote_code: bool = False) -> str:
    """The model's ``architectures[0]`` (a folder's config.json; a GGUF's, the causal LM class transformers
    converts it into), else its ``model_type``, else "unknown"; no weight is read."""
    if path.is_dir():
        try:
            config = json.loads((path / "config.json").read_text())
        except (OSError, ValueError):
            config = {}
        names = config.get("architectures") or []
        return str(names[0]) if names else str(config.get("model_type") or "unknown")
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    stat = path.stat()
    config = _gguf_config(path.resolve(), stat.st_size, stat.st_mtime_ns, trust_remote_code)
    names = getattr(config, "architectures", None) or []
    model_type = getattr(config, "model_type", "") or ""
    return str(names[0]) if names else MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type, model_type or "unknown")


@functools.lru_cache(maxsize=4)
def _gguf_config(file: Path, _size: int, _mtime: int, trust_remote_code: bool) -> Any:
    """The transformers config of a GGUF, from its metadata (read by the ``gguf`` package), parsed once."""
    from transformers import AutoConfig

    from autotune.models.gguf import check_gguf

    try:  # a few seconds for a tokenizer's worth of metadata: the names and the architecture share it
        return AutoConfig.from_pretrained(str(file.parent), gguf_file=file.name, trust_remote_code=trust_remote_code)
    except Exception:
        check_gguf(file)  # the file's fault: one line naming it; otherwise the library's error, as it was
        raise


def _gguf_names(file: Path, *, trust_remote_code: bool) -> ModuleNames:
    """The modules of the model transformers converts the GGUF into (config from the GGUF's metadata,
    read by the ``gguf`` package), built on the meta device: the names peft will match against."""
    import torch
    from transformers import AutoModelForCausalLM

    stat = file.stat()
    config = _gguf_config(file, stat.st_size, stat.st_mtime_ns, trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    modules = dict(model.named_modules())
    return ModuleNames(frozenset(name for name in modules if name), tuple(matrix_leaves(modules)))


def matrix_leaves(modules: dict[str, Any]) -> list[str]:
    """The last name part of every module holding a 2-D weight (linear, Conv1D, embedding layers), sorted."""
    return sorted({name.rsplit(".", 1)[-1] for name, module in modules.items()
                   if name and getattr(getattr(module, "weight", None), "ndim", 0) == 2})


def read_model_config(path: Path, *, trust_remote_code: bool) -> dict[str, Any]:
    """The input model's config as a dict (a folder's config.json; a GGUF's metadata through transformers)."""
    if path.is_dir():
        return json.loads((path / "config.json").read_text())
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    config = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name, trust_remote_code=trust_remote_code).to_dict()
    if not config.get("architectures"):  # a GGUF's config names its model type only
        config["architectures"] = [MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(config.get("model_type", ""), config.get("model_type", "unknown"))]
    return config
