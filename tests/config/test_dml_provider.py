"""DmlExecutionProvider: DirectML exists on Windows only and autotune does not run on Windows yet (fcntl cache
locks, /proc memory probes), so ``validate`` refuses it everywhere, in one line naming the key and why."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from autotune.cli import app
from tests.conftest import tiny_config


def _dml_config(tiny_model: Path, tone_file: Path, root: Path) -> Path:
    config = tiny_config(tiny_model, tone_file, root)
    config["passes"] = {"build": {"type": "ModelBuilder", "precision": "int4"}}
    config["engine"]["execution_providers"] = ["DmlExecutionProvider"]
    path = root / "dml.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(("platform", "os_name", "reason"), [
    ("linux", "posix", "runs on Windows only, this system is linux"),
    ("darwin", "posix", "runs on Windows only, this system is darwin"),
    ("win32", "nt", "needs Windows, where autotune does not run yet"),
])
def test_validate_refuses_directml_in_one_line_naming_the_key(tiny_model: Path, tone_file: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch, platform: str, os_name: str,
                                                               reason: str) -> None:
    path = _dml_config(tiny_model, tone_file, tmp_path)
    monkeypatch.setattr(sys, "platform", platform)
    if os_name != "nt":  # os.name "nt" would make pathlib build WindowsPaths, which cannot exist here
        monkeypatch.setattr(os, "name", os_name)
    result = CliRunner().invoke(app, ["validate", "--config", str(path)])
    monkeypatch.undo()
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "engine.execution_providers" in lines[0] and "DmlExecutionProvider" in lines[0] and reason in lines[0]
    assert not (tmp_path / "out").exists()
