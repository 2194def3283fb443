"""``autotune --version`` prints the version of this distribution (``autotune-slm``: PyPI's ``autotune`` is
another project); with ``-v`` also the runtimes', without importing them."""

from __future__ import annotations

import importlib.metadata as md
import os
import subprocess
import sys
from pathlib import Path

import pytest

import autotune


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "autotune", *args], capture_output=True, text=True, timeout=120, env=env)


def test_python_dash_m_autotune_version_prints_the_distributions_version() -> None:
    proc = _cli("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"autotune-slm {autotune.__version__}"
    assert md.version("autotune-slm") == autotune.__version__  # the installed metadata and the module agree


def test_version_never_reads_pypis_unrelated_autotune_distribution(tmp_path: Path) -> None:
    # PyPI's "autotune" 0.0.3 installed beside us: its metadata is found first on the path.
    info = tmp_path / "autotune-0.0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: autotune\nVersion: 0.0.3\n")
    proc = _cli("--version", env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"autotune-slm {autotune.__version__}"


@pytest.mark.parametrize("flags", [("--version", "-v"), ("-v", "--version"), ("--version", "--verbose")])
def test_version_verbose_adds_the_runtimes(flags: tuple[str, ...]) -> None:
    proc = _cli(*flags)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == f"autotune-slm {autotune.__version__}"
    for package in ("torch", "onnxruntime", "onnxruntime-genai"):
        assert f"{package} {md.version(package)}" in lines


def test_version_imports_no_runtime() -> None:
    code = ("import sys; from typer.testing import CliRunner; from autotune.cli import app; "
            "r = CliRunner().invoke(app, ['--version', '-v']); assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in ('torch', 'onnxruntime', 'onnxruntime_genai', 'transformers') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
