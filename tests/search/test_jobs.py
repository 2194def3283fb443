"""``run --jobs N``: trials at once in separate processes, each point and each fine-tune once."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import optuna
import pytest

import autotune
from autotune.cache import Cache
from autotune.config_checks import load_config
from autotune.plan import build_plan
from autotune.search.jobs import split_trials
from autotune.search.sampling import grid_points, interleave_prefixes
from tests.crash_hooks import hold
from tests.search.test_study import load, lora_runs, study_config


def another_process_took_a_trial(root: Path) -> Any:
    """A condition: a trial of the study in ``root`` is owned by a process other than this one."""
    storage: list[Any] = []

    def check() -> bool:
        if not storage:
            storage.append(optuna.storages.RDBStorage(f"sqlite:///{root / 'out' / 'study.db'}"))
        study = optuna.load_study(study_name="out", storage=storage[0])
        return any(((t.user_attrs.get("autotune_record") or {}).get("owner") or {}).get("pid") not in (None, os.getpid())
                   for t in study.get_trials(deepcopy=False))

    return check


def test_two_jobs_run_every_grid_point_once_and_each_fine_tune_once(tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    config = study_config(tiny_model, tone_file, tmp_path)
    config["evaluators"]["tiny"]["metrics"] = config["evaluators"]["tiny"]["metrics"][:1]  # accuracy: short
    # No baseline (its build would be this process's first), so the hold below meets this process's first trial.
    config["engine"]["evaluate_input_model"] = False
    # This process (the run's own job) is held at its first trial's build until the other job has taken a trial:
    # both run trials however the machine's load spreads them (else one can drain the queue while the other starts).
    with hold("build", until=another_process_took_a_trial(tmp_path)):
        result = autotune.run(config, jobs=2)
    study = load(tmp_path)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(study.trials) == len(complete) == 4
    assert {(t.params["lora.r"], t.params["build.precision"]) for t in complete} == {(2, "int4"), (2, "fp32"), (4, "int4"), (4, "fp32")}
    assert lora_runs(study) == 2  # each rank trained by one job; the other reused it from the shared cache
    owners = {t.user_attrs["autotune_record"]["owner"]["pid"] for t in complete}
    assert len(owners) == 2 and os.getpid() in owners  # both jobs ran trials
    assert (tmp_path / "out" / "best" / "genai_config.json").is_file() and len(result.trials) == 4


def test_n_trials_is_the_total_over_jobs(tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    config = study_config(tiny_model, tone_file, tmp_path)
    config["evaluators"]["tiny"]["metrics"] = config["evaluators"]["tiny"]["metrics"][:1]
    autotune.run(config, jobs=2, n_trials=3)
    states = [t.state for t in load(tmp_path).trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 3  # 2 + 1; the fourth grid point stays queued
    assert states.count(optuna.trial.TrialState.WAITING) == 1
    assert split_trials(5, 2) == [3, 2] and split_trials(1, 3) == [1, 0, 0] and split_trials(None, 2) == [None, None]


def test_jobs_refused_for_a_single_run_and_below_one(tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    config = study_config(tiny_model, tone_file, tmp_path)
    with pytest.raises(autotune.ConfigError, match="--jobs"):
        autotune.run(config, jobs=0)
    config["engine"]["search_strategy"] = False
    config["passes"]["lora"]["r"] = 2
    config["passes"]["build"]["precision"] = "int4"
    with pytest.raises(autotune.ConfigError, match="--jobs: a single run"):
        autotune.run(config, jobs=2)
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_the_grid_for_jobs_alternates_fine_tunes(tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    config = load_config(study_config(tiny_model, tone_file, tmp_path))
    points = grid_points(build_plan(config))
    assert [p["lora.r"] for p in points] == [2, 2, 4, 4]
    ordered = interleave_prefixes(points, build_plan(config))
    assert [p["lora.r"] for p in ordered] == [2, 4, 2, 4]  # two jobs start on two different fine-tunes
    assert sorted(map(str, ordered)) == sorted(map(str, points))


def test_processes_sharing_a_cache_folder_build_an_entry_once(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    order: list[str] = []

    def build(name: str) -> None:
        with cache.claim("k" * 64) as build_here:
            order.append(f"{name}:{build_here}")
            if build_here:
                time.sleep(0.5)
                with cache.put("k" * 64, {}) as folder:
                    (folder / "w.bin").write_bytes(b"x")

    threads = [threading.Thread(target=build, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(o.split(":")[1] for o in order) == ["False", "True"]  # one built it, the other waited and reused it
    assert cache.get("k" * 64) is not None
