"""``autotune --version`` prints the package version; with ``-v`` also the runtimes', without importing them."""

from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys

import pytest

import autotune


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "autotune.cli", *args], capture_output=True, text=True, timeout=120)


def test_version_prints_the_package_version() -> None:
    proc = _cli("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"autotune {autotune.__version__}"
    assert md.version("autotune") == autotune.__version__  # the installed metadata and the module agree


@pytest.mark.parametrize("flags", [("--version", "-v"), ("-v", "--version"), ("--version", "--verbose")])
def test_version_verbose_adds_the_runtimes(flags: tuple[str, ...]) -> None:
    proc = _cli(*flags)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == f"autotune {autotune.__version__}"
    for package in ("torch", "onnxruntime", "onnxruntime-genai"):
        assert f"{package} {md.version(package)}" in lines


def test_version_imports_no_runtime() -> None:
    code = ("import sys; from typer.testing import CliRunner; from autotune.cli import app; "
            "r = CliRunner().invoke(app, ['--version', '-v']); assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in ('torch', 'onnxruntime', 'onnxruntime_genai', 'transformers') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
