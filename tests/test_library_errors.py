"""A user's bad file is a one-line user error; a library failing on a good file keeps its type (and so its
traceback in the CLI's error log) instead of being passed off as the user's mistake."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from autotune.config_checks import load_config
from autotune.data import load_data
from autotune.errors import DataError, ModelError, UserError
from autotune.models.gguf import check_gguf

TEMPLATE = "### Text: {phrase}\n### The tone is:\n{tone}"
ROWS = "".join(json.dumps({"phrase": f"phrase {i}", "tone": ["joy", "fear"][i % 2]}) + "\n" for i in range(12))


def data_config(tmp_path: Path, content: str, name: str = "data.jsonl", data_name: str = "json") -> Any:
    path = tmp_path / name
    path.write_text(content)
    (tmp_path / "model").mkdir(exist_ok=True)
    raw = {
        "input_model": {"type": "HfModel", "model_path": str(tmp_path / "model")},
        "data_configs": [{"name": "d", "type": "HuggingfaceContainer",
                          "load_dataset_config": {"data_name": data_name, "data_files": str(path)},
                          "pre_process_data_config": {"text_template": TEMPLATE}, "eval_dataset_size": 2}],
        "engine": {"search_strategy": False},
    }
    return load_config(raw, base_dir=tmp_path).data_configs[0]


@pytest.mark.parametrize(
    ("name", "data_name", "content", "words"),
    [
        ("broken.jsonl", "json", '{"phrase": "x", "tone": \n{{{\n', "cannot read as json: JSON parse error"),
        ("list.json", "json", "[1, 2", "cannot read as json: "),
        ("broken.csv", "csv", 'phrase,tone\n"x,joy\n', "cannot read as csv: "),
        ("empty.jsonl", "json", "", "the data file is empty"),
        ("blank.jsonl", "json", "\n  \n", "the data file is empty"),
    ],
)
def test_a_bad_data_file_is_one_line_naming_it(tmp_path: Path, name: str, data_name: str, content: str, words: str) -> None:
    with pytest.raises(DataError) as info:
        load_data(data_config(tmp_path, content, name, data_name))
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{tmp_path / name}: {words}"), message
    assert "An error occurred while generating the dataset" not in message  # datasets' wrapper says nothing


def test_a_library_failure_while_loading_data_keeps_its_type(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    config = data_config(tmp_path, ROWS)
    assert len(load_data(config).eval) == 2  # the file itself is fine

    def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("pyarrow: internal error")

    monkeypatch.setattr(datasets, "load_dataset", broken)
    with pytest.raises(RuntimeError, match="internal error") as info:
        load_data(config)
    assert not isinstance(info.value, UserError)


def test_a_library_failure_wrapped_by_datasets_keeps_its_cause(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets
    from datasets.exceptions import DatasetGenerationError

    def broken(*_: Any, **__: Any) -> None:
        try:
            raise MemoryError("cannot allocate")
        except MemoryError as exc:
            raise DatasetGenerationError("An error occurred while generating the dataset") from exc

    monkeypatch.setattr(datasets, "load_dataset", broken)
    with pytest.raises(DatasetGenerationError) as info:
        load_data(data_config(tmp_path, ROWS))
    assert isinstance(info.value.__cause__, MemoryError)


def test_a_cut_gguf_is_a_model_error(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x05" * 20)
    with pytest.raises(ModelError) as info:
        check_gguf(path)
    assert str(info.value).startswith(f"{path}: cannot read GGUF") and "\n" not in str(info.value)


def test_a_library_failure_reading_a_gguf_keeps_its_type(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gguf

    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 64)

    class Broken:
        def __init__(self, *_: Any) -> None:
            raise TypeError("GGUFReader.__init__() got an unexpected keyword argument")  # e.g. an API change

    monkeypatch.setattr(gguf, "GGUFReader", Broken)
    with pytest.raises(TypeError):
        check_gguf(path)


def test_the_cli_reports_a_library_failure_with_its_type_and_a_traceback_log(tmp_path: Path, tiny_model: Path,
                                                                            tone_file: Path) -> None:
    import os
    import subprocess
    import sys

    from tests.conftest import tiny_config

    path = tmp_path / "run.json"
    path.write_text(json.dumps(tiny_config(tiny_model, tone_file, tmp_path)))
    code = ("import sys, datasets\n"
            "def broken(*args, **kwargs):\n    raise RuntimeError('pyarrow: internal error')\n"
            "datasets.load_dataset = broken  # the fault: the library fails on a good file\n"
            "from autotune.cli import main\n"
            f"sys.argv = ['autotune', 'run', '--config', {str(path)!r}]\n"
            "main()\n")
    env = {**os.environ, "AUTOTUNE_LOG_DIR": str(tmp_path / "logs"), "COLUMNS": "300"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # not 2: it is not the user's mistake
    assert "error: RuntimeError: pyarrow: internal error" in proc.stderr
    logs = list((tmp_path / "logs").glob("*.log"))
    assert len(logs) == 1 and str(logs[0]) in proc.stderr
    assert "Traceback" in logs[0].read_text() and "in broken" in logs[0].read_text()


def test_a_malformed_data_file_through_the_cli_is_exactly_one_line(tmp_path: Path, tiny_model: Path) -> None:
    import os
    import subprocess
    import sys

    from tests.conftest import tiny_config

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"phrase": "x", "tone": \n{{{\n')
    path = tmp_path / "run.json"
    path.write_text(json.dumps(tiny_config(tiny_model, broken, tmp_path)))
    proc = subprocess.run([sys.executable, "-m", "autotune.cli", "run", "--config", str(path)], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "300"}, timeout=300)
    assert proc.returncode == 2
    # datasets logs the parse failure itself before raising it: the user sees it once, as autotune's line.
    assert proc.stdout == "" and proc.stderr.strip().splitlines() == [
        f"error: {broken}: cannot read as json: JSON parse error: Missing a name for object member. in row 0"]
