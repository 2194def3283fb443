"""Content-addressed store of pass outputs and evaluation results.

An entry is a folder ``models/<key>/`` holding ``model/`` and ``manifest.json`` (every file's size
and sha256). It is written under ``tmp/`` and renamed into place, so a killed run never leaves a
half entry that looks whole; a reader checks the manifest and discards an entry that does not match.
Two writers of one key: the first rename wins, the second drops its copy and reuses the winner's.

With a shared store (:mod:`autotune.artifacts`, ``engine.artifact_store``) this cache is a read-through
layer: an entry missing here is downloaded once, verified against its manifest, and kept; an entry
written here is uploaded. :meth:`Cache.claim` makes one worker, across machines, build each entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune.models.handle import FileHasher

if TYPE_CHECKING:
    from autotune.artifacts import ArtifactStore

log = logging.getLogger("autotune.cache")
CACHE_FORMAT = 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def hash_key(payload: dict[str, Any]) -> str:
    """Full sha256 hex of a JSON payload (sorted keys): the cache key of a pass output."""
    blob = json.dumps({"format": CACHE_FORMAT, **payload}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class Cache:
    def __init__(self, root: Path, store: ArtifactStore | None = None, *, heartbeat: float = 20.0) -> None:
        self.root = root
        self.store = store
        # A claim's heartbeat period; a claim whose heartbeat stops for 3x this has expired.
        self.heartbeat = heartbeat
        self.models = root / "models"
        self.evals = root / "evals"
        self.tmp = root / "tmp"
        # Folders are made on first write: a run refused for bad input leaves no trace here.
        self.hasher = FileHasher(root / "file_hashes.json")

    # -- models ---------------------------------------------------------------------------------
    def entry(self, key: str) -> Path:
        return self.models / key

    def has(self, key: str) -> bool:
        return (self.entry(key) / "manifest.json").is_file() or (self.store is not None and self.store.has(key))

    def location(self, key: str) -> str:
        """Where entry ``key`` can be found by any worker: the store's URL, else this machine's folder."""
        return self.store.location(key) if self.store is not None else str(self.entry(key))

    def get(self, key: str) -> tuple[Path, dict[str, Any]] | None:
        """(model folder, manifest) of a verified entry, or None (a corrupt entry is discarded).
        An entry only in the store is downloaded and verified first."""
        entry = self.entry(key)
        manifest_path = entry / "manifest.json"
        if not manifest_path.is_file():
            return self._pull(key) if self.store is not None else None
        try:
            manifest = json.loads(manifest_path.read_text())
            self._verify(entry / "model", manifest["files"])
        except (OSError, ValueError, KeyError) as exc:
            log.warning("cache entry %s is corrupt (%s); discarding it and rebuilding", key[:12], exc)
            self._discard(entry)
            return self._pull(key) if self.store is not None else None  # the store's copy, if it has one
        os.utime(manifest_path)  # last use, for LRU eviction
        return entry / "model", manifest

    def _verify(self, folder: Path, files: dict[str, dict[str, Any]], digest: Any = None) -> None:
        digest = digest or self.hasher.file
        for rel, meta in files.items():
            path = folder / rel
            if not path.is_file():
                raise ValueError(f"missing file {rel}")
            if path.stat().st_size != meta["size"]:
                raise ValueError(f"{rel} has {path.stat().st_size} bytes, manifest says {meta['size']}")
            if digest(path) != meta["sha256"]:
                raise ValueError(f"{rel} does not match its sha256")

    @contextmanager
    def put(self, key: str, info: dict[str, Any]) -> Iterator[Path]:
        """Yield an empty folder to write the model into; on success it becomes entry ``key``."""
        from autotune.fileio import file_sha256

        staging = self.tmp / f"{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        self.models.mkdir(parents=True, exist_ok=True)
        (staging / "model").mkdir(parents=True)
        try:
            yield staging / "model"
            files = {
                str(p.relative_to(staging / "model")): {"size": p.stat().st_size, "sha256": file_sha256(p)}
                for p in sorted((staging / "model").rglob("*"))
                if p.is_file()
            }
            manifest = {"key": key, "created": time.time(), "files": files, **info}
            if not self._install(staging, key, manifest):
                log.info("cache entry %s was written by another worker; reusing it", key[:12])
            if self.store is not None:
                self.store.upload(key, self.entry(key))
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def _pull(self, key: str) -> tuple[Path, dict[str, Any]] | None:
        """Download entry ``key`` from the store into this cache (staged, verified, renamed in)."""
        from autotune.fileio import file_sha256

        assert self.store is not None
        manifest = self.store.manifest(key)
        if manifest is None:
            return None
        staging = self.tmp / f"{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        self.models.mkdir(parents=True, exist_ok=True)
        (staging / "model").mkdir(parents=True)
        try:
            began = time.perf_counter()
            self.store.download(key, manifest["files"], staging / "model")
            self._verify(staging / "model", manifest["files"], file_sha256)  # hashed once, not remembered under tmp/
            self._install(staging, key, manifest)
            size = sum(meta["size"] for meta in manifest["files"].values())
            log.info("cache entry %s downloaded from the store (%.1f MB in %.1f s)", key[:12], size / 1e6, time.perf_counter() - began)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("store entry %s is unreadable or corrupt (%s); it will be rebuilt", key[:12], exc)
            if isinstance(exc, (ValueError, KeyError)):
                self.store.forget(key)  # a bad copy in the store would fail every worker: let the rebuild replace it
            return None
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return self.get(key) if (self.entry(key) / "manifest.json").is_file() else None

    def _install(self, staging: Path, key: str, manifest: dict[str, Any]) -> bool:
        """Write the manifest and rename a finished staging folder into entry ``key``; False when another
        writer's copy got there first (kept: the key is the content). Checks this machine's folder only."""
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
        try:
            os.rename(staging, self.entry(key))
        except OSError:
            if not (self.entry(key) / "manifest.json").is_file():
                raise
            return False
        # a rename keeps sizes and mtimes: reading the entry back need not hash it again
        model = self.entry(key) / "model"
        self.hasher.remember({model / rel: meta["sha256"] for rel, meta in manifest["files"].items()})
        return True

    @contextmanager
    def claim(self, key: str, *, deadline: float | None = None) -> Iterator[bool]:
        """Yield True when this process should build entry ``key``, False when it exists (here or in the
        store, built by another worker meanwhile). With a store, the first worker to claim ``key``
        builds it; the others poll until it appears, its claim is released, or its heartbeat stops."""
        if self.store is None:
            with self._local_claim(key, deadline) as build_here:
                yield build_here
            return
        if self.has(key):
            yield False
            return
        from autotune.artifacts import Claim

        claim: Claim | None = None
        seen: tuple[int, bytes] | None = None
        changed = time.monotonic()
        ttl = 3 * self.heartbeat
        while claim is None:
            holder = self.store.holder(key)
            if holder is None:
                claim = self.store.claim(key, 0, self.heartbeat)
            elif holder != seen:
                if seen is None or seen[0] != holder[0]:
                    log.info("entry %s is being built by another worker (%s); waiting", key[:12], holder[1].decode(errors="replace"))
                seen, changed = holder, time.monotonic()  # a new claim or a fresh heartbeat
            elif time.monotonic() - changed > ttl:
                claim = self.store.claim(key, holder[0] + 1, self.heartbeat)
                if claim is not None:
                    log.warning("claim on %s expired (no heartbeat for %.0f s: %s); building it here",
                                key[:12], ttl, holder[1].decode(errors="replace"))
            if claim is None:
                if self.store.has(key):
                    yield False
                    return
                if deadline is not None and time.monotonic() > deadline:
                    from autotune.errors import TrialTimeout

                    raise TrialTimeout(f"trial_timeout exceeded waiting for another worker to build {key[:12]}")
                time.sleep(min(max(self.heartbeat / 2, 0.2), 5.0))
        try:
            if self.store.has(key):  # built and released between our look and our claim
                yield False
            else:
                yield True
        finally:
            claim.release()

    @contextmanager
    def _local_claim(self, key: str, deadline: float | None) -> Iterator[bool]:
        """Processes sharing this cache folder (``run --jobs N``) build each entry once: an exclusive
        ``flock`` per key, which the kernel releases if its holder dies. True: build it here; False:
        another process built it while this one waited."""
        import fcntl

        locks = self.root / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        with open(locks / key, "a") as handle:
            waited = False
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not waited:
                        log.info("entry %s is being built by another process; waiting", key[:12])
                        waited = True
                    if deadline is not None and time.monotonic() > deadline:
                        from autotune.errors import TrialTimeout

                        raise TrialTimeout(f"trial_timeout exceeded waiting for another process to build {key[:12]}") from None
                    time.sleep(0.2)
            try:
                yield not (self.entry(key) / "manifest.json").is_file()
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _discard(self, entry: Path) -> None:
        self.hasher.forget(entry)
        self.tmp.mkdir(parents=True, exist_ok=True)
        trash = self.tmp / f"discard.{entry.name}.{uuid.uuid4().hex[:8]}"
        try:
            os.rename(entry, trash)
        except OSError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    def sweep(self) -> int:
        """Remove staging folders left by killed processes (never read as entries; this frees space)."""
        removed = 0
        if not self.tmp.is_dir():
            return 0
        for item in self.tmp.iterdir():
            parts = item.name.split(".")
            # "<key>.<pid>.<rand>[.json]" (staging) or "work-<pid>.<rand>" (a pass's scratch folder)
            pid = parts[0].removeprefix("work-") if item.name.startswith("work-") else (parts[1] if len(parts) > 1 else "")
            if not pid.isdigit() or _alive(int(pid)):
                continue
            shutil.rmtree(item, ignore_errors=True) if item.is_dir() else item.unlink(missing_ok=True)
            removed += 1
        if removed:
            log.info("cache: removed %d staging folder(s) left by killed runs", removed)
        return removed

    # -- eviction -------------------------------------------------------------------------------
    @contextmanager
    def in_use(self, keys: list[str]) -> Iterator[None]:
        """Mark entries as used by this process, so eviction (by any worker) leaves them alone."""
        folder = self.root / "inuse"
        folder.mkdir(parents=True, exist_ok=True)
        marks = [folder / f"{key}.{os.getpid()}" for key in keys]
        for mark in marks:
            mark.touch()
        try:
            yield
        finally:
            for mark in marks:
                mark.unlink(missing_ok=True)

    def _used_keys(self) -> set[str]:
        used = set()
        for mark in (self.root / "inuse").glob("*.*") if (self.root / "inuse").is_dir() else []:
            key, _, pid = mark.name.rpartition(".")
            if pid.isdigit() and _alive(int(pid)):
                used.add(key)
            else:
                mark.unlink(missing_ok=True)  # left by a dead process
        return used

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.models.rglob("*") if p.is_file()) if self.models.is_dir() else 0

    def evict(self, max_bytes: int) -> list[str]:
        """Remove least-recently-used entries until the cache fits ``max_bytes``; never one in use."""
        if not self.models.is_dir():
            return []
        entries = []
        for entry in self.models.iterdir():
            manifest = entry / "manifest.json"
            if manifest.is_file():
                size = sum(p.stat().st_size for p in entry.rglob("*") if p.is_file())
                entries.append((manifest.stat().st_mtime, entry.name, size))
        total = sum(size for _, _, size in entries)
        used = self._used_keys()
        removed = []
        for _, key, size in sorted(entries):
            if total <= max_bytes:
                break
            if key in used:
                continue
            self._discard(self.entry(key))
            total -= size
            removed.append(key)
            log.info("cache: evicted %s (%.1f MB, least recently used)", key[:12], size / 1e6)
        return removed

    # -- evaluation results ---------------------------------------------------------------------
    def get_json(self, key: str) -> dict[str, Any] | None:
        path = self.evals / f"{key}.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            pass
        value = self.store.get_json(key) if self.store is not None else None
        if value is not None:
            self._write_json(key, value)  # read through: the next read is local
        return value

    def put_json(self, key: str, value: dict[str, Any]) -> None:
        self._write_json(key, value)
        if self.store is not None:
            self.store.put_json(key, value)

    def _write_json(self, key: str, value: dict[str, Any]) -> None:
        path = self.evals / f"{key}.json"
        self.evals.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        tmp = self.tmp / f"{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}.json"
        tmp.write_text(json.dumps(value, indent=2, default=str))
        os.replace(tmp, path)
