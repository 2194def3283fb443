"""Hugging Face model ids (``org/name``): found in the local Hugging Face cache, downloaded when absent.

The cache is the one ``huggingface_hub`` and transformers share (``HF_HUB_CACHE``, else
``HF_HOME/hub``, else ``~/.cache/huggingface/hub``), read without the network: a revision (branch,
tag or commit) that has a snapshot there is used as it is. Only an id absent from the cache is
downloaded, through ``huggingface_hub.snapshot_download`` and only the files autotune loads (config,
tokenizer, safetensors; never pickled ``*.bin`` weights). With ``HF_HUB_OFFLINE=1`` set by the user an
absent id is a one-line error saying how to fetch it.

autotune keeps the libraries it drives offline (:func:`go_offline`): they only
ever get local folders. The user's own ``HF_HUB_OFFLINE`` choice, recorded before that, is what
decides here whether a download may happen.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotune.errors import ModelError

__all__ = ["HubSnapshot", "USER_OFFLINE_MARK", "find_hub_model", "go_offline", "hub_cache_dir", "hub_offline", "hub_reachable",
           "id_from_url", "looks_like_hub_id"]

log = logging.getLogger("autotune")

# Set by go_offline to the user's own HF_HUB_OFFLINE verdict ("1"/"0") before it makes the process
# offline for the libraries; child processes inherit it.
USER_OFFLINE_MARK = "AUTOTUNE_USER_HF_HUB_OFFLINE"

# What a causal LM folder needs: config, tokenizer files, safetensors weights (root files only).
HF_FOLDER_FILES = ["config.json", "generation_config.json", "tokenizer*", "special_tokens_map.json", "added_tokens.json",
                   "vocab.*", "merges.txt", "*.tiktoken", "*.jinja", "*.safetensors", "*.safetensors.index.json"]
REMOTE_CODE_FILES = ["*.py"]  # only with input_model.trust_remote_code: true

_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
_HUB_URL = re.compile(r"https?://(?:www\.)?(?:huggingface\.co|hf\.co)/([A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)/?")
_TRUE = {"1", "on", "yes", "true"}


def looks_like_hub_id(text: str) -> bool:
    """``org/name`` as the Hub spells ids (not a path: no leading ``/``, ``.``, ``~``, one slash, no ``--``/``..``)."""
    return bool(_ID.fullmatch(text)) and "--" not in text and ".." not in text and len(text) <= 96


def id_from_url(url: str) -> str | None:
    """``org/name`` of a ``https://huggingface.co/org/name`` URL, else None."""
    match = _HUB_URL.fullmatch(url.strip())
    return match.group(1) if match and looks_like_hub_id(match.group(1)) else None


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache as ``huggingface_hub`` finds it, read from the environment now."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"
    return Path(home).expanduser() / "hub"


def hub_offline() -> bool:
    """Whether the user asked for no Hub access (``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``)."""
    mark = os.environ.get(USER_OFFLINE_MARK)
    if mark is not None:
        return mark == "1"
    return any(os.environ.get(name, "").strip().lower() in _TRUE for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


@dataclass(frozen=True)
class HubSnapshot:
    """One revision of a Hub model in the local cache: ``path`` is ``snapshots/<commit>``."""

    repo_id: str
    revision: str
    commit: str
    path: Path


def find_hub_model(repo_id: str, *, revision: str = "main", files: list[str] | None = None, download: bool = True,
                   cache_only: bool = False, where: str = "input_model.model_path") -> HubSnapshot | None:
    """The cached snapshot of ``repo_id`` at ``revision``; downloaded first when absent and allowed.

    ``files``: the patterns to download (default: a Hugging Face folder's files). ``download=False``
    (``validate``): an absent id is checked on the Hub without downloading and None is returned.
    ``cache_only``: None when absent, without a look at the Hub. Offline and absent is a
    :class:`ModelError` that says how to fetch it.
    """
    cache = hub_cache_dir()
    patterns = files or HF_FOLDER_FILES
    found = _cached(repo_id, revision, cache, patterns)
    if found is not None or cache_only:
        return found
    shown = repo_id if revision == "main" else f"{repo_id} (revision {revision})"
    if hub_offline():
        fetch = f"hf download {repo_id}" + (f" --revision {revision}" if revision != "main" else "")
        raise ModelError(where, f"'{shown}' is neither a local folder nor in the Hugging Face cache ({cache}) and "
                                f"HF_HUB_OFFLINE=1: fetch it where the network is reachable (`{fetch}`, then copy that "
                                f"cache here or point HF_HUB_CACHE at it), or set model_path to a local model folder")
    if not download:
        _check_on_hub(repo_id, revision, patterns, where=where)
        return None
    log.info("downloading %s from the Hugging Face Hub into %s (%s)", shown, cache, ", ".join(patterns))
    with hub_reachable(), _hub_errors(repo_id, revision, cache, where=where):
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache, allow_patterns=patterns,
                                      ignore_patterns=["*/*"]))  # root files only: no subfolder copies of weights
    lacking = _lacking([p.name for p in path.iterdir() if p.is_file()], patterns)
    if lacking:
        raise ModelError(where, f"'{repo_id}' on the Hugging Face Hub has {lacking}")
    return HubSnapshot(repo_id=repo_id, revision=revision, commit=path.name, path=path)


def _cached(repo_id: str, revision: str, cache: Path, patterns: list[str]) -> HubSnapshot | None:
    """The snapshot in the cache, if it holds what autotune loads (another tool may have fetched only a config)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache, local_files_only=True))
    except LocalEntryNotFoundError:
        return None
    if _lacking([p.name for p in path.iterdir() if p.is_file()], patterns):
        return None
    return HubSnapshot(repo_id=repo_id, revision=revision, commit=path.name, path=path)


def _lacking(names: list[str], patterns: list[str]) -> str | None:
    """What a snapshot listing ``names`` (root files) lacks of ``patterns``, in words; None when complete."""
    from fnmatch import fnmatch

    folder = "*.safetensors" in patterns  # else a GGUF file's name
    missing = [p for p in (["config.json"] if folder else patterns) if p not in names]
    if missing:
        return f"no {missing[0]}"
    if folder and not any(fnmatch(n, "*.safetensors") for n in names):
        pickled = next((n for n in names if n.endswith((".bin", ".pt", ".pth"))), None)
        return "no .safetensors weights" + (f" (it has {pickled}; pickle weights are never loaded)" if pickled else "")
    return None


def _check_on_hub(repo_id: str, revision: str, patterns: list[str], *, where: str) -> None:
    """The id and revision exist on the Hub and hold what autotune loads (one metadata request, no download)."""
    with hub_reachable(), _hub_errors(repo_id, revision, hub_cache_dir(), where=where):
        from huggingface_hub import HfApi

        info = HfApi().model_info(repo_id, revision=revision, files_metadata=False)
    lacking = _lacking([s.rfilename for s in info.siblings or [] if "/" not in s.rfilename], patterns)
    if lacking:
        raise ModelError(where, f"'{repo_id}' on the Hugging Face Hub has {lacking}")


@contextlib.contextmanager
def hub_reachable(*, datasets: bool = False) -> Iterator[None]:
    """Let huggingface_hub (and, with ``datasets``, the datasets library) reach the network for this call only,
    unless the user asked for no Hub (:func:`hub_offline`).

    go_offline sets HF_HUB_OFFLINE=1 for the libraries (each reads it once, at import, into its own constant);
    the user did not ask for it, so the one download autotune makes (an input model id, an lm-eval task's Hub
    data) lifts it and puts it back."""
    if hub_offline():
        yield
        return
    from huggingface_hub import constants

    flags: list[tuple[Any, str]] = [(constants, "HF_HUB_OFFLINE")]
    if datasets:
        import datasets.config

        flags += [(datasets.config, "HF_HUB_OFFLINE"), (datasets.config, "HF_DATASETS_OFFLINE")]
    before = [getattr(owner, name) for owner, name in flags]
    for owner, name in flags:
        setattr(owner, name, False)
    try:
        yield
    finally:
        for (owner, name), value in zip(flags, before, strict=True):
            setattr(owner, name, value)


@contextlib.contextmanager
def _hub_errors(repo_id: str, revision: str, cache: Path, *, where: str) -> Iterator[None]:
    """The Hub's answers a user can act on, as one line each; anything else keeps its type and traceback."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    unreachable = _unreachable_errors()
    try:
        yield
    except GatedRepoError:
        raise ModelError(where, f"'{repo_id}' is gated on the Hugging Face Hub: accept its terms on "
                                f"https://huggingface.co/{repo_id} and log in (`hf auth login`)") from None
    except RevisionNotFoundError:
        raise ModelError("input_model.revision", f"'{repo_id}' has no revision '{revision}' on the Hugging Face Hub") from None
    except RepositoryNotFoundError:
        raise ModelError(where, f"no model '{repo_id}' on the Hugging Face Hub (a private one needs `hf auth login`), "
                                f"and no local folder of that name") from None
    except (LocalEntryNotFoundError, *unreachable) as exc:  # snapshot_download's LocalEntryNotFoundError: no Hub
        cause = exc.__cause__ if isinstance(exc, LocalEntryNotFoundError) and exc.__cause__ else exc
        first = str(cause).strip().splitlines()[0][:160] if str(cause).strip() else type(cause).__name__
        raise ModelError(where, f"cannot reach the Hugging Face Hub to fetch '{repo_id}' ({first}) and it is not in the "
                                f"cache ({cache}): retry online, or set model_path to a local model folder") from None
    except HfHubHTTPError as exc:
        first = str(exc).strip().splitlines()[0][:160]
        raise ModelError(where, f"the Hugging Face Hub refused '{repo_id}': {first}") from None


def _unreachable_errors() -> tuple[type[BaseException], ...]:
    """What a request raises when the Hub cannot be reached: the HTTP client huggingface_hub uses, if loaded."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for name in ("httpx2", "httpx"):
        client = sys.modules.get(name)
        if client is not None and isinstance(getattr(client, "TransportError", None), type):
            errors.append(client.TransportError)
    return tuple(errors)


def go_offline() -> None:
    """The libraries autotune drives stay off the network; no telemetry.

    transformers, peft, datasets and kernels only ever get local folders and files, so HF_HUB_OFFLINE=1
    keeps them from reaching the Hub on their own (hub kernels, update checks). The user's own choice
    is recorded first (child processes inherit it): it decides whether autotune's one Hub access, the
    download of an input model id absent from the cache (autotune.models.hub), may happen.
    """
    os.environ.setdefault(USER_OFFLINE_MARK, "1" if hub_offline() else "0")
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(name, "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
