"""``autotune validate``: a bad config is one ``error:`` line naming the key and exit code 2; a good one says valid.

The configs here have no LoRA pass, so validating them does not import transformers (each run stays
well under a second).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml


def _run(config: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("FORCE_COLOR", None)
    return subprocess.run(
        [sys.executable, "-m", "autotune.cli", "validate", "--config", str(config)],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=120,
    )


def _config(model: Path) -> dict[str, Any]:
    return {
        "input_model": {"type": "HfModel", "model_path": str(model)},
        "passes": {"build": {"type": "ModelBuilder", "config": {"precision": "int4", "int4_block_size": 32}}},
        "engine": {"search_strategy": False, "output_dir": "out"},
    }


def _bad_block_size(cfg: dict[str, Any]) -> None:
    cfg["passes"]["build"]["config"]["int4_block_size"] = "x"


def _azureml(cfg: dict[str, Any]) -> None:
    cfg["systems"] = {"aml": {"type": "AzureML", "config": {"aml_compute": "gpu-cluster"}}}


def _misspelt_top_key(cfg: dict[str, Any]) -> None:
    cfg["pases"] = cfg.pop("passes")


@pytest.mark.parametrize(
    ("mutate", "where", "words"),
    [
        (_bad_block_size, "passes.build.config.int4_block_size", 'expected one of 16, 32, 64, 128 or 256, got "x"'),
        (_azureml, "systems.aml.type", "AzureML systems are not supported"),
        (_misspelt_top_key, "pases", "unknown key; did you mean 'passes'?"),
    ],
    ids=["wrong-type", "azureml", "misspelt-key"],
)
def test_validate_bad_config(tmp_path: Path, mutate: Any, where: str, words: str) -> None:
    cfg = _config(tmp_path)
    mutate(cfg)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = _run(path, tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {where}: {words}")


def test_validate_yaml_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("input_model:\n  model_path: [a, b\n")
    proc = _run(path, tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {path}: invalid YAML at line ")


def test_validate_good_config(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(_config(tmp_path), sort_keys=False))
    proc = _run(path, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stdout.strip() == f"{path}: valid (1 passes, single run, provider CPUExecutionProvider)"
