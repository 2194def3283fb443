"""Bad data and model files through the real command line: one line, exit code 2, no traceback,
nothing written to the cache or the results folder. And a fuzzed config loader."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autotune.config_checks import load_config
from autotune.errors import UserError
from tests.conftest import tiny_config


def _write(name: str, content: bytes) -> Callable[[Path, dict[str, Any]], str]:
    def make(root: Path, config: dict[str, Any]) -> str:
        path = root / name
        path.write_bytes(content)
        config["data_configs"][0]["load_dataset_config"]["params"]["data_files"] = str(path)
        return str(path)

    return make


def _model(mutate: Callable[[Path], None]) -> Callable[[Path, dict[str, Any]], str]:
    def make(root: Path, config: dict[str, Any]) -> str:
        folder = root / "model"
        shutil.copytree(config["input_model"]["model_path"], folder)
        mutate(folder)
        config["input_model"]["model_path"] = str(folder)
        return str(folder)

    return make


def _truncate(folder: Path) -> None:
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])


def _pickle_only(folder: Path) -> None:
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")


def _gguf(content: bytes) -> Callable[[Path, dict[str, Any]], str]:
    def make(root: Path, config: dict[str, Any]) -> str:
        path = root / "model.gguf"
        path.write_bytes(content)
        config["input_model"] = {"type": "HfModel", "model_path": str(root), "gguf_file": "model.gguf"}
        return str(path)

    return make


def _template(template: str) -> Callable[[Path, dict[str, Any]], str]:
    def make(root: Path, config: dict[str, Any]) -> str:
        config["data_configs"][0]["pre_process_data_config"]["params"]["text_template"] = template
        return "text_template"

    return make


def _eval_size(size: float) -> Callable[[Path, dict[str, Any]], str]:
    def make(root: Path, config: dict[str, Any]) -> str:
        config["data_configs"][0]["eval_dataset_size"] = size
        return "eval_dataset_size"

    return make


GOOD_ROW = json.dumps({"phrase": "a fine day", "tone": "joy"})
UNLABELLED = "\n".join(json.dumps({"phrase": f"p{i}", "tone": ""}) for i in range(9)).encode()
CASES = {
    "data file missing": (lambda root, c: _missing(root, c), "no such file"),
    "data not UTF-8": (_write("latin1.jsonl", '{"phrase": "caf\xe9", "tone": "joy"}\n'.encode("latin-1")), "not UTF-8"),
    "data empty": (_write("empty.jsonl", b""), "the data file is empty"),
    "data not JSON": (_write("broken.jsonl", b'{"phrase": "x", "tone": \n{{{\n'), "cannot read as json: JSON parse error"),
    "data unlabelled": (_write("nolabel.jsonl", UNLABELLED), "labelled"),
    "data one row": (_write("one.jsonl", GOOD_ROW.encode()), "at least 2"),
    "template column missing": (_template("### Text: {sentence}\n### The tone is:\n{tone}"), "column 'sentence'"),
    "template answer twice": (_template("{tone}: {phrase} and {tone}"), "more than once"),
    "template no placeholders": (_template("just text"), "placeholders"),
    "eval size too big": (_eval_size(5000), "held-out rows"),
    "model folder missing": (lambda root, c: _missing_model(root, c), "no such file or folder"),
    "safetensors truncated": (_model(_truncate), "truncated"),
    "pickle weights only": (_model(_pickle_only), "never loaded"),
    "model without config.json": (_model(lambda f: (f / "config.json").unlink()), "config.json"),
    "gguf not gguf": (_gguf(b"NOTGGUF" + b"\0" * 64), "not a GGUF"),
    "gguf truncated": (_gguf(b"GGUF\x03\x00\x00\x00" + b"\x05" * 20), "GGUF"),
}


def _missing(root: Path, config: dict[str, Any]) -> str:
    config["data_configs"][0]["load_dataset_config"]["params"]["data_files"] = str(root / "nope.jsonl")
    return "data_files"


def _missing_model(root: Path, config: dict[str, Any]) -> str:
    config["input_model"]["model_path"] = str(root / "no-model")
    return "input_model.model_path"


@pytest.mark.parametrize("case", list(CASES))
def test_bad_files_are_user_errors_in_one_line_and_write_nothing(case: str, tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    import autotune

    make, message = CASES[case]
    config = tiny_config(tiny_model, tone_file, tmp_path)
    where = make(tmp_path, config)
    with pytest.raises(UserError) as info:
        autotune.run(config)
    assert "\n" not in str(info.value)
    assert where in str(info.value) and message in str(info.value)
    assert not (tmp_path / "cache").exists(), "a refused run wrote to the cache"
    assert not (tmp_path / "out").exists(), "a refused run wrote results"


@pytest.mark.parametrize("case", ["data not UTF-8", "template column missing", "safetensors truncated", "gguf truncated"])
def test_bad_files_through_the_command_line(case: str, tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    make, message = CASES[case]
    config = tiny_config(tiny_model, tone_file, tmp_path)
    where = make(tmp_path, config)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    proc = subprocess.run([sys.executable, "-m", "autotune.cli", "run", "--config", str(path)], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "300"}, timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "Traceback" not in output
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert where in errors[0] and message in errors[0]
    assert not (tmp_path / "cache").exists(), "a refused run wrote to the cache"
    assert not (tmp_path / "out").exists(), "a refused run wrote results"


NAMES = st.sampled_from(["input_model", "passes", "engine", "data_configs", "evaluators", "systems", "type", "config", "lora",
                         "r", "precision", "model_path", "search_strategy", "sampler", "low", "high", "training_args", "x"])
LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-5, 100), st.floats(allow_nan=True), st.text(max_size=8),
                   st.sampled_from(["LoRA", "ModelBuilder", "int4", "fp16", "tpe", "HfModel", "AzureML", "SEARCHABLE_VALUES"]))
TREES = st.recursive(LEAVES, lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(NAMES, children, max_size=5)),
                     max_leaves=25)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=st.dictionaries(NAMES, TREES, max_size=6))
def test_fuzzed_configs_load_or_fail_as_user_errors(tree: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> None:
    try:
        load_config(tree, base_dir=tmp_path_factory.getbasetemp())
    except UserError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=200))
def test_fuzzed_yaml_text_loads_or_fails_as_a_user_error(text: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.getbasetemp() / "fuzz.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass") if "\ud800" not in text else path.write_bytes(b"\xff")
    try:
        load_config(path)
    except UserError as exc:
        assert "\n" not in str(exc)
    except yaml.YAMLError:  # pragma: no cover - must be converted
        pytest.fail("a YAML error escaped as a traceback")
