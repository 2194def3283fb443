"""No pass or study changes process-wide state behind the user's back: while ONNX Runtime's quantizers run,
logging stays on, ``sys.stdout`` is the same object and the warning filters are untouched (other threads
keep logging), and a study leaves Optuna's verbosity and the warning filters as they were."""

from __future__ import annotations

import logging
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import optuna
import pytest

import autotune
from autotune.context import PassContext
from autotune.logging_setup import QUANTIZER_LOGGERS
from autotune.models.handle import ModelHandle
from autotune.passes import get_pass
from tests.conftest import tiny_config


@pytest.fixture()
def fp32_onnx(tiny_onnx: Path) -> Path:
    return tiny_onnx  # the session's fp32 build (conftest.py): the quantizers read it and write elsewhere


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _look(during: dict[str, Any]) -> None:
    """What the process looks like from inside the quantizer call, and whether another thread still logs."""
    during["disable"] = logging.root.manager.disable
    during["stdout"] = sys.stdout
    during["filters"] = warnings.filters
    during["filter_entries"] = list(warnings.filters)
    other = threading.Thread(target=lambda: logging.getLogger("autotune.other").info("another thread logs during the quantizer"))
    other.start()
    other.join()


@pytest.mark.parametrize("pass_type", ["OnnxDynamicQuantization", "OnnxBlockWiseRtnQuantization"])
def test_a_quantizer_pass_changes_nothing_process_wide(fp32_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         pass_type: str) -> None:
    import onnxruntime.quantization as ort_quantization
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    during: dict[str, Any] = {}
    real_dynamic, real_process = ort_quantization.quantize_dynamic, MatMulNBitsQuantizer.process

    def dynamic_spy(*args: Any, **kwargs: Any) -> Any:
        _look(during)
        return real_dynamic(*args, **kwargs)

    def process_spy(self: Any) -> Any:
        _look(during)
        return real_process(self)

    monkeypatch.setattr(ort_quantization, "quantize_dynamic", dynamic_spy)
    monkeypatch.setattr(MatMulNBitsQuantizer, "process", process_spy)
    ours = logging.getLogger("autotune")
    collect = Collect()
    ours.addHandler(collect)
    monkeypatch.setattr(ours, "level", logging.INFO)
    stdout, filters, entries = sys.stdout, warnings.filters, list(warnings.filters)
    levels = {name: logging.getLogger(name).level for name in QUANTIZER_LOGGERS}
    cls = get_pass(pass_type, path="passes.quant")
    output, work = tmp_path / "out", tmp_path / "work"
    output.mkdir()
    work.mkdir()
    try:
        cls().run(ModelHandle(kind="onnx", path=fp32_onnx, key="k"), cls.Params(),
                  PassContext(provider="CPUExecutionProvider", work_dir=work), output)
    finally:
        ours.removeHandler(collect)
    assert during, "the quantizer was not called"
    assert during["disable"] == logging.NOTSET  # no process-wide logging.disable
    assert during["stdout"] is stdout  # no sys.stdout swap that every thread would write into
    assert during["filters"] is filters and during["filter_entries"] == entries  # no warning filters swapped or added
    assert "another thread logs during the quantizer" in collect.messages
    assert logging.root.manager.disable == logging.NOTSET and sys.stdout is stdout
    assert warnings.filters is filters and list(warnings.filters) == entries
    assert {name: logging.getLogger(name).level for name in QUANTIZER_LOGGERS} == levels
    assert (output / "model.onnx").is_file()


def test_a_study_leaves_optunas_verbosity_and_the_warning_filters_as_they_were(tmp_path: Path, tiny_model: Path,
                                                                                  tone_file: Path) -> None:
    config = tiny_config(tiny_model, tone_file, tmp_path)
    config["passes"] = {"build": {"type": "ModelBuilder", "precision": "fp32"}}
    autotune.run(config)  # imports every library a run needs (some add warning filters when imported)
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.INFO)
    try:
        entries = list(warnings.filters)
        from autotune.run_context import RunContext
        from autotune.search.study import Study

        Study(RunContext(autotune.load_config(config)))
        assert optuna.logging.get_verbosity() == optuna.logging.INFO
        autotune.run(config)
        assert optuna.logging.get_verbosity() == optuna.logging.INFO
        assert list(warnings.filters) == entries
    finally:
        optuna.logging.set_verbosity(previous)
