"""Writes that never leave a half-written file or folder: write beside the target, then rename.

A write whose result equals what is already there leaves the old file or folder in place (its mtime
kept): a rerun that changed nothing rewrites nothing (tools that watch mtimes see no change)."""

from __future__ import annotations

import filecmp
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["LINK_MIN_BYTES", "atomic_copy_tree", "atomic_write", "file_sha256", "link_or_copy", "replace_dir", "same_tree",
           "write_json", "write_text"]

LINK_MIN_BYTES = 1 << 20


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.{suffix}")


def atomic_write(path: Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then rename it into place (unless ``path``
    already holds the same bytes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "tmp")
    try:
        write(tmp)
        if not (path.is_file() and filecmp.cmp(tmp, path, shallow=False)):
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_text(path: Path, text: str) -> Path:
    path = Path(path)
    try:
        if path.read_text() == text:
            return path  # unchanged: not even a temporary file
    except (OSError, UnicodeDecodeError):
        pass
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: Path, value: Any) -> Path:
    return write_text(path, json.dumps(value, indent=2, default=str))


def link_or_copy(source: str, target: str) -> None:
    # Weights are hard-linked from the cache (no copy of hundreds of MB; an edit in place is caught by
    # the cache's manifest check, and eviction leaves the link alive); small files such as
    # genai_config.json, which users do edit, are copied.
    if os.path.getsize(source) >= LINK_MIN_BYTES:
        try:
            os.link(source, target)
            return
        except OSError:  # another file system, or links not allowed
            pass
    shutil.copy2(source, target)


def replace_dir(staging: Path, target: Path) -> None:
    """Put a finished folder in the place of ``target`` by renames (the old one goes only after)."""
    if target.exists():
        old = _sibling(target, "old")
        os.rename(target, old)
        os.rename(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(staging, target)


def atomic_copy_tree(source: Path, target: Path, *, extra: Callable[[Path], Any] | None = None) -> Path:
    """Copy a folder (weights linked) to ``target`` via a staging folder and a rename; ``extra(staging)``
    may add files (a model card) before the folder appears."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = _sibling(target, "tmp")
    try:
        shutil.copytree(source, staging, copy_function=link_or_copy)
        if extra is not None:
            extra(staging)
        if not same_tree(staging, target):
            replace_dir(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def same_tree(a: Path, b: Path) -> bool:
    """Whether two folders hold the same relative paths with the same bytes (a hard link of the same
    file is equal without reading it). A file of ``a`` that is a hard link (weights linked from the
    cache) is equal only to the same inode: equal bytes in a copy, or a link to an older cache entry,
    would leave ``b`` holding a second copy instead of the current entry's file."""
    if not b.is_dir():
        return False
    files_a = sorted(p.relative_to(a) for p in a.rglob("*"))
    if files_a != sorted(p.relative_to(b) for p in b.rglob("*")):
        return False
    for rel in files_a:
        x, y = a / rel, b / rel
        if x.is_dir() != y.is_dir():
            return False
        if not x.is_file():
            continue
        sx, sy = x.stat(), y.stat()
        if (sx.st_ino, sx.st_dev) == (sy.st_ino, sy.st_dev):
            continue
        if sx.st_nlink > 1 or not filecmp.cmp(x, y, shallow=False):
            return False
    return True


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """The file's SHA-256, read in chunks (a model file does not fit in memory twice)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
