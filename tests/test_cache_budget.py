"""Cache size budget (LRU, never evicting an entry in use) and a full disk."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import autotune
from autotune.cache import Cache
from autotune.errors import DiskFullError
from tests.conftest import tiny_config


def put(cache: Cache, key: str, size: int) -> None:
    with cache.put(key, {}) as folder:
        (folder / "blob").write_bytes(b"x" * size)


def test_lru_eviction_keeps_recently_used_and_in_use_entries(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    for i, key in enumerate(["a" * 64, "b" * 64, "c" * 64, "d" * 64]):
        put(cache, key, 1000)
        os.utime(cache.entry(key) / "manifest.json", (time.time() - 100 + i, time.time() - 100 + i))
    assert cache.get("a" * 64) is not None  # a is now the most recently used
    # sizes differ by a byte or two (the manifest's timestamp), so the budget is exact: a, b and d fit
    keep = sum(p.stat().st_size for key in "abd" for p in cache.entry(key * 64).rglob("*") if p.is_file())
    with cache.in_use(["b" * 64]):
        removed = cache.evict(keep)
    assert removed == ["c" * 64]  # b is oldest but in use, c next; then the cache fits
    assert cache.has("a" * 64) and cache.has("b" * 64) and cache.has("d" * 64)


def test_a_mark_left_by_a_dead_process_does_not_protect(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    put(cache, "e" * 64, 1000)
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(proc.stdout)
    (tmp_path / "inuse").mkdir(exist_ok=True)
    (tmp_path / "inuse" / f"{'e' * 64}.{dead}").touch()
    assert cache.evict(10) == ["e" * 64]


def test_runs_stay_within_the_budget_and_keep_their_own_chain(tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    config = tiny_config(tiny_model, tone_file, tmp_path)
    config["engine"]["cache_max_gb"] = 0.0012  # 1.2 MB: room for one chain of the tiny model (~0.95 MB), not two
    first = autotune.run(config)
    config["passes"]["lora"]["r"] = 2
    second = autotune.run(config)
    cache = Cache(tmp_path / "cache")
    assert all(cache.has(p.key) for p in second.record.passes)
    assert not all(cache.has(p.key) for p in first.record.passes)
    assert cache.size_bytes() <= 1.2e6


def test_a_full_disk_is_a_clear_error_and_the_study_resumes(tmp_path: Path, tiny_model: Path, tone_file: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import optuna

    from autotune.passes import model_builder
    from tests.search.test_study import study_config

    real = model_builder.build_onnx

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    config = study_config(tiny_model, tone_file, tmp_path)
    config["passes"]["lora"]["r"] = 2
    config["engine"]["evaluate_input_model"] = False  # no baseline build: the disk fills up in a trial's build
    monkeypatch.setattr(model_builder, "build_onnx", full)
    with pytest.raises(DiskFullError, match="no space left"):
        autotune.run(config)
    monkeypatch.setattr(model_builder, "build_onnx", real)
    autotune.run(config)
    study = optuna.load_study(study_name="out", storage=f"sqlite:///{tmp_path / 'out' / 'study.db'}")
    states = [t.state.name for t in study.trials]
    assert states[0] == "FAIL" and states.count("COMPLETE") == 2
