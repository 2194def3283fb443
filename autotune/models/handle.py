"""A model as the pipeline sees it: what kind it is, where it lies, and its content key."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ModelKind = Literal["hf", "adapter", "onnx"]


@dataclass(frozen=True)
class ModelHandle:
    kind: ModelKind
    path: Path
    key: str
    # An adapter is applied to a base model; merging needs it.
    base: ModelHandle | None = None


class FileHasher:
    """sha256 of files, memoised on (path, size, mtime) in a JSON file so reruns skip rehashing."""

    def __init__(self, memo_path: Path | None) -> None:
        self.memo_path = memo_path
        self.memo: dict[str, list] = {}
        if memo_path and memo_path.is_file():
            try:
                self.memo = json.loads(memo_path.read_text())
            except (OSError, ValueError):
                self.memo = {}

    def file(self, path: Path) -> str:
        from autotune.fileio import file_sha256

        stat = path.stat()
        ident = [stat.st_size, stat.st_mtime_ns]
        entry = self.memo.get(str(path.resolve()))
        if entry and entry[:2] == ident:
            return entry[2]
        digest = file_sha256(path)
        self.memo[str(path.resolve())] = [*ident, digest]
        self._save()
        return digest

    def remember(self, digests: dict[Path, str]) -> None:
        """Record digests computed elsewhere (a cache entry hashed while staged, then renamed)."""
        for path, digest in digests.items():
            stat = path.stat()
            self.memo[str(path.resolve())] = [stat.st_size, stat.st_mtime_ns, digest]
        self._save()

    def forget(self, folder: Path) -> None:
        """Drop the memo of every file under ``folder`` (a discarded entry), so the memo stays small."""
        prefix = str(folder.resolve()) + os.sep
        kept = {path: entry for path, entry in self.memo.items() if not path.startswith(prefix)}
        if len(kept) != len(self.memo):
            self.memo = kept
            self._save()

    def folder(self, path: Path) -> str:
        digest = hashlib.sha256()
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(file.relative_to(path)).encode())
            digest.update(self.file(file).encode())
        return digest.hexdigest()

    def _save(self) -> None:
        if not self.memo_path:
            return
        self.memo_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.memo_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.memo))
        os.replace(tmp, self.memo_path)
