"""The distribution as pip sees it: its own name (PyPI's ``autotune`` is another project), the licence it
declares shipped as a file, ``py.typed``, the built-in evaluators and search spaces (found by an installed
wheel from any folder), ``python -m autotune``, and a dependency list that matches what the package imports."""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml

import autotune
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]
DISTRIBUTION = "autotune-slm"

# Declared, yet imported only by the libraries that need them at run time (they do not declare them all).
RUNTIME_ONLY = {
    "accelerate": "transformers' Trainer (LoRA training)",
    "safetensors": "transformers' save/load of the HF folders",
    "sentencepiece": "tokenizers of GGUF and Llama-family models",
    "pyarrow": "pandas' trials.parquet",
    "onnx-ir": "onnxruntime-genai's model builder",
    "onnxscript": "onnxruntime-genai's model builder",
}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _third_party_imports() -> set[str]:
    """Top-level modules the package imports (absolute imports outside the standard library)."""
    found: set[str] = set()
    for path in (ROOT / "autotune").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m != "autotune"}


def test_the_installed_distribution_is_autotune_slm_not_pypis_autotune() -> None:
    assert re.search(r'^name = "autotune-slm"$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert md.version(DISTRIBUTION) == autotune.__version__
    assert md.distribution(DISTRIBUTION).entry_points.select(group="console_scripts", name="autotune")
    assert set(md.packages_distributions()["autotune"]) == {DISTRIBUTION}  # no other distribution claims the package


def test_python_dash_m_autotune_runs_the_command() -> None:
    proc = subprocess.run([sys.executable, "-m", "autotune", "--help"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "run" in proc.stdout and "validate" in proc.stdout


def test_every_direct_import_is_declared_and_every_base_dependency_is_used() -> None:
    requirements = md.requires(DISTRIBUTION) or []  # as pip reads them (base, then each extra's)
    declared_base = {_name(r) for r in requirements if "extra ==" not in r}
    declared = {_name(r) for r in requirements}
    owners = md.packages_distributions()
    imported = {m: {_name(d) for d in owners.get(m, [m])} for m in _third_party_imports()}
    undeclared = sorted(m for m, dists in imported.items() if not dists & declared)
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
    used = set().union(*imported.values())
    unused = sorted(declared_base - used - set(RUNTIME_ONLY))
    assert not unused, f"declared but never imported (drop them, or say in RUNTIME_ONLY who needs them): {unused}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel pip builds from a copy of the sources (a build in the checkout would leave build/ there)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "autotune", source / "autotune", ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(root / "dist"),
                           str(source)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (built,) = (root / "dist").glob("*.whl")
    return built


def test_the_wheel_ships_the_license_py_typed_and_the_new_name(wheel: Path) -> None:
    assert wheel.name.startswith("autotune_slm-")
    names = zipfile.ZipFile(wheel).namelist()
    assert "autotune/py.typed" in names and "autotune/__main__.py" in names
    licence = next(n for n in names if n.endswith("LICENSE") and ".dist-info/" in n)
    text = zipfile.ZipFile(wheel).read(licence).decode()
    assert text.startswith("MIT License") and "the autotune authors" in text
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "Name: autotune-slm" in metadata and "psutil" not in metadata
    for folder in BUILTIN_FOLDERS:
        shipped = {n.rsplit("/", 1)[1] for n in names if n.startswith(f"autotune/builtin/{folder}/")}
        assert shipped == {p.name for p in (ROOT / folder).iterdir()}, folder


BUILTIN_FOLDERS = ("evaluators", "search_spaces")


def test_the_top_level_evaluators_and_search_spaces_are_the_packaged_ones_byte_for_byte() -> None:
    # autotune/builtin/ is what ships (package data); the checkout's top-level folders are copies for reading.
    for folder in BUILTIN_FOLDERS:
        top, packaged = ROOT / folder, ROOT / "autotune" / "builtin" / folder
        assert sorted(p.name for p in top.iterdir()) == sorted(p.name for p in packaged.iterdir()), folder
        for path in top.iterdir():
            assert path.read_bytes() == (packaged / path.name).read_bytes(), f"{path} differs from {packaged / path.name}"


def test_an_installed_wheel_finds_the_built_in_evaluator_and_search_space_from_any_folder(
        wheel: Path, tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    # A fresh venv holding the wheel alone; the dev venv's libraries (torch & co, not autotune: its editable
    # finder is installed by a .pth file, which a path line of a .pth does not run) are seen through a .pth line.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
                           str(wheel)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "dev_libraries.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    where = subprocess.run([str(python), "-c", "import autotune.config.loader as l; print(l.__file__); print(l.BUILTIN_ROOT)"],
                           capture_output=True, text=True, timeout=120, cwd=empty)
    assert where.returncode == 0, where.stderr
    module, builtin = where.stdout.split()
    assert Path(module).is_relative_to(site) and Path(builtin).is_relative_to(site)  # the wheel's autotune, not the checkout's
    config = tiny_config(tiny_model, tone_file, tmp_path)
    config["evaluators"] = {"main": "tone-accuracy-latency"}  # built-in names: no evaluators/ or search_spaces/ near
    config["engine"]["search_strategy"] = {"sampler": "tpe", "max_samples": 2, "search_space": "lora-default"}
    config["engine"]["evaluator"] = "main"
    del config["passes"]["lora"]["training_args"]["learning_rate"]  # the space searches it
    path = empty / "run.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))  # the passes in their order
    proc = subprocess.run([str(venv / "bin" / "autotune"), "validate", "--config", "run.yaml"], capture_output=True, text=True,
                          timeout=300, cwd=empty)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "run.yaml: valid (3 passes, search" in proc.stdout
