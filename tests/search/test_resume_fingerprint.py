"""Resuming a study with other data, another evaluator or other fixed pass settings is refused before any
work, from the command line: one line naming what changed and the way out, exit code 2, the study as it was.
A study stored before fingerprints were kept adopts one built from its stored run config (a difference from
that config is refused the same way); tests/search/test_fingerprint_checks.py checks the rules at unit level."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

import autotune
from autotune.records import META_ATTR, read_meta
from tests.conftest import tiny_config


def study_config(model: Path, data: Path, root: Path) -> dict[str, Any]:
    """A one-point grid: LoRA (1 step) -> merge, scored on 8 validation rows in PyTorch."""
    config = tiny_config(model, data, root)
    del config["passes"]["build"]
    config["passes"]["lora"]["r"] = [4]  # searched (one value): the study is a search
    config["passes"]["lora"]["training_args"].update({"max_steps": 1, "per_device_train_batch_size": 4})
    config["data_configs"][0]["eval_dataset_size"] = 8
    config["evaluators"] = {"acc": {"metrics": [{"name": "accuracy", "type": "accuracy", "sub_types": [{"name": "accuracy"}],
                                                 "user_config": {"perplexity": False}}]}}
    config["engine"].update({"evaluator": "acc", "search_strategy": {"sampler": "grid"}, "evaluate_input_model": False})
    return config


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, tone_rows: list[dict[str, str]]) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("fingerprint")
    data = root / "tones.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in tone_rows[:120]))
    config = study_config(tiny_model, data, root)
    autotune.run(config)
    return {"root": root, "config": config, "data": data}


def copy_study(finished: dict[str, Any], tmp_path: Path) -> tuple[dict[str, Any], Path]:
    """The finished study's output folder and data file, copied: each test changes its own."""
    config = json.loads(json.dumps(finished["config"]))
    shutil.copytree(finished["root"] / "out", tmp_path / "out")
    shutil.copy(finished["data"], tmp_path / "tones.jsonl")
    config["engine"]["output_dir"] = str(tmp_path / "out")
    config["data_configs"][0]["load_dataset_config"]["params"]["data_files"] = str(tmp_path / "tones.jsonl")
    return config, tmp_path / "out" / "study.db"


def cli_run(config: dict[str, Any], folder: Path) -> subprocess.CompletedProcess[str]:
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    env = {**os.environ, "COLUMNS": "400"}
    env.pop("FORCE_COLOR", None)
    return subprocess.run([sys.executable, "-m", "autotune.cli", "run", "--config", str(path)], capture_output=True, text=True,
                          env=env, cwd=folder, timeout=600)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _other_rows(config: dict[str, Any], folder: Path) -> None:
    data = folder / "tones.jsonl"
    lines = data.read_text().splitlines()
    data.write_text("\n".join(lines[:3] + lines[4:]) + "\n")  # one row fewer: every split shifts


def _eval_dataset_size(config: dict[str, Any], folder: Path) -> None:
    config["data_configs"][0]["eval_dataset_size"] = 6


def _metrics(config: dict[str, Any], folder: Path) -> None:
    config["evaluators"]["acc"]["metrics"][0]["user_config"]["max_examples"] = 4


def _fixed_lora_setting(config: dict[str, Any], folder: Path) -> None:
    config["passes"]["lora"]["alpha"] = 16


@pytest.mark.parametrize(("change", "where", "words"), [
    (_other_rows, "data_configs[0]",
     "data 'tones' changed since the study's trials were scored: its validation split differs (8 rows, other ones"),
    (_eval_dataset_size, "data_configs[0]", "its validation split differs (8 rows then, 6 now"),
    (_metrics, "evaluators.acc.metrics[0].user_config", "scored by another evaluator: metric 'accuracy' had another user_config"),
    (_fixed_lora_setting, "passes.lora.alpha", "the study's trials ran with 8.0, this config has 16.0 (a fixed setting, not searched)"),
], ids=["data-rows", "eval-dataset-size", "evaluator-metrics", "fixed-lora-setting"])
def test_a_resume_that_changed_what_trials_are_scored_on_is_refused_and_the_study_kept(
        finished: dict[str, Any], tmp_path: Path, change: Callable[[dict[str, Any], Path], None], where: str, words: str) -> None:
    config, db = copy_study(finished, tmp_path)
    before = sha256(db)
    change(config, tmp_path)
    result = cli_run(config, tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {where}: "), lines[0]
    assert words in lines[0], lines[0]
    assert "set engine.study_name, or another engine.output_dir" in lines[0]
    assert sha256(db) == before  # the study untouched


def test_a_study_without_a_fingerprint_adopts_one_from_its_stored_config_and_an_unchanged_resume_runs(
        finished: dict[str, Any], tmp_path: Path) -> None:
    config, db = copy_study(finished, tmp_path)
    storage = f"sqlite:///{db}"
    study = optuna.load_study(study_name="out", storage=storage)
    meta = dict(study.user_attrs[META_ATTR])
    assert meta["fingerprint"]["passes"]["lora"]["fixed"]["alpha"] == 8.0
    assert "versions" in meta["fingerprint"]["evaluator"]
    del meta["fingerprint"]
    meta["schema_version"] = 2
    meta["config"]["data_configs"][0]["data_files"] = [str(tmp_path / "tones.jsonl")]  # as if it had run here
    study.set_user_attr(META_ATTR, meta)  # as an autotune before fingerprints wrote it
    assert read_meta(optuna.load_study(study_name="out", storage=storage)).fingerprint is None
    before = sha256(db)
    config["passes"]["lora"]["alpha"] = 16  # not what its trials ran with, as its stored run config says: refused
    result = cli_run(config, tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "error: passes.lora.alpha: the study's trials ran with 8.0, this config has 16.0" in result.stderr
    assert sha256(db) == before
    config["passes"]["lora"]["alpha"] = 8  # the stored run config's: resumes, and the study keeps the adopted fingerprint
    result = cli_run(config, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    stored = read_meta(optuna.load_study(study_name="out", storage=storage))
    assert stored.fingerprint is not None and stored.fingerprint.passes["lora"]["fixed"]["alpha"] == 8.0
    assert "versions" not in stored.fingerprint.evaluator  # which versions scored its trials is unknown: never claimed
    assert len(optuna.load_study(study_name="out", storage=storage).trials) == 1  # the grid was done: no new trial
