"""The shared artifact store (``engine.artifact_store``): cache entries every worker of a study reads
and writes, so a fine-tune done on one machine is not done again on another, and ``select`` on any
machine finds the chosen model.

Backend: fsspec (``LocalFileSystem`` for a shared path or ``file://``; ``s3fs`` for ``s3://bucket/prefix``
on AWS or any S3-compatible server). Layout under the store's root, mirroring the local cache::

    models/<key>/model/<files>    the entry's files, uploaded first
    models/<key>/manifest.json    every file's size and sha256, uploaded last: its presence means whole
    evals/<key>.json              evaluation results
    claims/<key>/<generation>     who builds <key> now: {host, pid, beat, time}, rewritten every heartbeat

What each backend promises (and what the claims rely on):
- file system: ``os.open(O_CREAT | O_EXCL)`` creates a claim only if absent (atomic on local disks and
  on NFSv3+); files are written under a temporary name and renamed, so no reader sees half a file.
- S3: a PUT is atomic per object (a reader sees the old object or the new, never half); a claim is
  created with a conditional PUT (``If-None-Match: *``, AWS S3 since 2024, MinIO, moto), which fails
  when the object exists.
A claim expires when its content (its heartbeat counter) has not changed for ``ttl`` seconds as timed
by the waiter's own clock, so machines' clocks need not agree. Breaking an expired claim is itself an
exclusive create of the next generation: of several waiters exactly one takes over.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from autotune.errors import ConfigError
from autotune.fileio import atomic_write

__all__ = ["ArtifactStore", "Claim", "check_store_url", "open_store"]

log = logging.getLogger("autotune.artifacts")
WHERE = "engine.artifact_store"


def check_store_url(url: str) -> str:
    """Refuse, without touching the network, a store URL autotune cannot use (the schema's check)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("", "file"):
        path = parts.path if scheme == "file" else url
        if scheme == "file" and parts.netloc not in ("", "localhost"):
            raise ValueError(f"a file:// URL names a path on this machine (file:///shared/store), not host '{parts.netloc}'")
        if not Path(path).is_absolute():
            raise ValueError(f"expected an absolute path that every worker mounts at the same place, got \"{url}\"")
        return url
    if scheme == "s3":
        if not parts.netloc:
            raise ValueError("an S3 store needs a bucket: s3://bucket/prefix")
        if "@" in parts.netloc:
            raise ValueError("credentials do not belong in the URL (it is stored with the study): "
                             "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or an AWS profile")
        unknown = set(parse_qs(parts.query)) - {"endpoint_url", "region"}
        if unknown:
            raise ValueError(f"unknown S3 option '{sorted(unknown)[0]}' (known: endpoint_url, region)")
        return url
    raise ValueError(f"unsupported scheme '{scheme}://' (a shared path, file://PATH or s3://bucket/prefix)")


def open_store(url: str) -> ArtifactStore:
    """The store at ``url``, checked reachable now: a one-line ConfigError naming engine.artifact_store if not."""
    from autotune.urls import redact_url

    try:
        check_store_url(url)
    except ValueError as exc:
        raise ConfigError(WHERE, str(exc)) from None
    parts = urlsplit(url)
    if parts.scheme.lower() == "s3":
        try:
            import s3fs
        except ImportError:
            raise ConfigError(WHERE, "an s3:// store needs s3fs: pip install -e \".[s3]\"") from None
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        client = {"region_name": query["region"]} if "region" in query else {}
        fs = s3fs.S3FileSystem(endpoint_url=query.get("endpoint_url"), client_kwargs=client, skip_instance_cache=True,
                               use_listings_cache=False)  # other workers write: never answer from a stale listing
        store = ArtifactStore(url, fs, f"{parts.netloc}{parts.path}".rstrip("/"), local=False)
        try:
            fs.ls(parts.netloc)  # the bucket exists and the credentials may read it
        except Exception as exc:  # botocore/aiohttp raise many kinds: any is "unreachable"
            raise ConfigError(WHERE, f"cannot reach {redact_url(url)}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
        return store
    from fsspec.implementations.local import LocalFileSystem

    root = Path(parts.path if parts.scheme else url)
    # An absent folder is refused, not created: on a machine where the share is not mounted, creating
    # it would give that machine a private store that silently shares nothing.
    if not root.is_dir():
        raise ConfigError(WHERE, f"no such folder: {root} (mount the shared file system, or create the folder once)")
    if not os.access(root, os.W_OK):
        raise ConfigError(WHERE, f"{root} is not writable by this user")
    return ArtifactStore(url, LocalFileSystem(), str(root), local=True)


class ArtifactStore:
    """Entries, evaluation results and claims on one fsspec file system under ``root``."""

    def __init__(self, url: str, fs: Any, root: str, *, local: bool) -> None:
        self.url = url
        self.fs = fs
        self.root = root
        self.local = local

    def _path(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def location(self, key: str) -> str:
        """Where entry ``key`` lives (shown in the trial record; no credentials: the URL has none)."""
        return f"{self.url.split('?')[0].rstrip('/')}/models/{key}"

    # -- primitives: atomic whole-object writes and exclusive creates ---------------------------------
    def _read(self, rel: str) -> bytes | None:
        try:
            return bytes(self.fs.cat_file(self._path(rel)))
        except (FileNotFoundError, IsADirectoryError):
            return None

    def _write(self, rel: str, data: bytes) -> None:
        path = self._path(rel)
        if not self.local:
            self.fs.pipe_file(path, data)  # one PUT: atomic
            return
        atomic_write(Path(path), lambda tmp: tmp.write_bytes(data))

    def _create(self, rel: str, data: bytes) -> bool:
        """Write ``rel`` only if it does not exist; True when this call created it."""
        path = self._path(rel)
        if not self.local:
            try:
                self.fs.pipe_file(path, data, mode="create")  # conditional PUT, If-None-Match: *
            except FileExistsError:
                return False
            return True
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return True

    def _delete(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._path(rel))

    def _list(self, rel: str) -> list[str]:
        try:
            return [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self._path(rel), detail=False)]
        except FileNotFoundError:
            return []

    # -- entries ----------------------------------------------------------------------------------
    def has(self, key: str) -> bool:
        return bool(self.fs.exists(self._path(f"models/{key}/manifest.json")))

    def manifest(self, key: str) -> dict[str, Any] | None:
        raw = self._read(f"models/{key}/manifest.json")
        if raw is None:
            return None
        try:
            return dict(json.loads(raw))
        except ValueError:
            return None

    def download(self, key: str, files: dict[str, Any], dest: Path) -> None:
        """Copy the entry's files into ``dest`` (the caller verifies them against the manifest)."""
        for rel in files:
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            self.fs.get_file(self._path(f"models/{key}/model/{rel}"), str(target))

    def upload(self, key: str, entry: Path) -> None:
        """Upload a local entry folder: every file first, the manifest last (a reader never sees half)."""
        if self.has(key):
            return  # content-addressed: whoever wrote it first wrote the same thing
        model = entry / "model"
        for path in sorted(model.rglob("*")):
            if not path.is_file():
                continue
            rel = f"models/{key}/model/{path.relative_to(model).as_posix()}"
            if self.local:
                atomic_write(Path(self._path(rel)), lambda tmp, source=path: self.fs.put_file(str(source), str(tmp)))
            else:
                self.fs.put_file(str(path), self._path(rel))
        self._write(f"models/{key}/manifest.json", (entry / "manifest.json").read_bytes())

    def forget(self, key: str) -> None:
        """Hide a corrupt entry (its manifest goes), so the next builder uploads a good one."""
        self._delete(f"models/{key}/manifest.json")

    # -- evaluation results -----------------------------------------------------------------------
    def get_json(self, key: str) -> dict[str, Any] | None:
        raw = self._read(f"evals/{key}.json")
        try:
            return dict(json.loads(raw)) if raw is not None else None
        except ValueError:
            return None

    def put_json(self, key: str, value: dict[str, Any]) -> None:
        self._write(f"evals/{key}.json", json.dumps(value, indent=2, default=str).encode())

    # -- claims -----------------------------------------------------------------------------------
    def holder(self, key: str) -> tuple[int, bytes] | None:
        """(generation, content) of the newest claim on ``key``, or None."""
        generations = sorted(int(n) for n in self._list(f"claims/{key}") if n.isdigit())
        for generation in reversed(generations):
            raw = self._read(f"claims/{key}/{generation}")
            if raw is not None:
                return generation, raw
        return None

    def claim(self, key: str, generation: int, heartbeat: float) -> Claim | None:
        """Claim ``key`` at ``generation`` (0, or one past an expired claim); None if another got it."""
        claim = Claim(self, key, generation, heartbeat)
        if not self._create(claim.rel, claim.content()):
            return None
        claim.start()
        return claim


class Claim:
    """This process builds entry ``key``: its heartbeat rewrites the claim until :meth:`release`."""

    def __init__(self, store: ArtifactStore, key: str, generation: int, heartbeat: float) -> None:
        self.store = store
        self.key = key
        self.generation = generation
        self.heartbeat = heartbeat
        self.rel = f"claims/{key}/{generation}"
        self.beat = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"claim-{key[:12]}", daemon=True)

    def content(self) -> bytes:
        return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "beat": self.beat, "time": time.time()}).encode()

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.heartbeat):
            self.beat += 1
            try:
                current = self.store.holder(self.key)
                if current is not None and current[0] > self.generation:
                    log.warning("claim on %s was taken over (this worker's heartbeat was late); building it anyway",
                                self.key[:12])
                    return
                self.store._write(self.rel, self.content())
            except Exception as exc:  # a store hiccup: the next beat tries again; a long outage lets the claim expire
                log.warning("claim heartbeat for %s failed: %s", self.key[:12], exc)

    def release(self) -> None:
        """Stop the heartbeat and remove this claim and the expired ones below it (newer ones are others')."""
        self._stop.set()
        self._thread.join(timeout=30)
        for generation in range(self.generation, -1, -1):
            try:
                self.store._delete(f"claims/{self.key}/{generation}")
            except Exception as exc:
                log.warning("could not remove claim %s/%d: %s", self.key[:12], generation, exc)
