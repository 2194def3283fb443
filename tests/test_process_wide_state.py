"""No pass or study changes process-wide state behind the user's back: while ONNX Runtime's quantizers, the
model builder, GPTQ or the mixed-precision pass run, logging stays on, ``sys.stdout`` is the same object and
the warning filters are untouched (other threads keep logging and printing to the console, none of it into
the builder's log), and a study leaves Optuna's verbosity and the warning filters as they were."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import pytest

import autotune
from autotune.context import PassContext
from autotune.library_noise import QUANTIZER_LOGGERS
from autotune.models.handle import ModelHandle
from autotune.passes import get_pass
from tests.conftest import TONES, tiny_config


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


class Chatter(threading.Thread):
    """Another thread that, until stopped, prints to ``sys.stdout`` and ``sys.stderr``, writes to fds 1 and 2
    and logs through autotune's logger, and notes which ``sys.stdout`` it saw."""

    LINES = ("another thread prints to sys.stdout", "another thread prints to sys.stderr",
             "another thread writes to fd 1", "another thread writes to fd 2", "another thread logs")

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.halt = threading.Event()
        self.stdouts: set[int] = set()
        self.rounds = 0

    def run(self) -> None:
        out, err, fd1, fd2, logged = self.LINES
        while not self.halt.is_set():
            self.stdouts.add(id(sys.stdout))
            print(out, file=sys.stdout, flush=True)
            print(err, file=sys.stderr, flush=True)
            os.write(1, f"{fd1}\n".encode())
            os.write(2, f"{fd2}\n".encode())
            logging.getLogger("autotune.other").info(logged)
            self.rounds += 1
            time.sleep(0.002)


@pytest.fixture(scope="module")
def calibration_data(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from autotune.data import load_data

    config = tiny_config(tiny_model, TONES, tmp_path_factory.mktemp("calibration"))
    return load_data(autotune.load_config(config).data_configs[0])


@pytest.mark.parametrize(("pass_type", "params"), [
    ("ModelBuilder", {"precision": "int8"}),
    ("ModelBuilder", {"precision": "int4", "algo_config": "gptq", "calibration_rows": 8, "train_data_config": "tones"}),
    ("OnnxGptqQuantization", {"calibration_rows": 8}),
    ("OnnxMixedPrecisionQuantization", {"algorithm": "rtn", "calibration_rows": 8}),
])
def test_a_build_or_int4_pass_keeps_other_threads_output_out_of_the_builders_log(
        tiny_model: Path, calibration_data: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str], pass_type: str, params: dict[str, Any]) -> None:
    import autotune.passes.weight_only_pass as weight_only_pass

    during: dict[str, Any] = {}
    real_quantize = weight_only_pass.quantize_int4

    def quantize_spy(*args: Any, **kwargs: Any) -> Any:  # GPTQ's and the mixed pass's int4 body, in this process
        _look(during)
        return real_quantize(*args, **kwargs)

    monkeypatch.setattr(weight_only_pass, "quantize_int4", quantize_spy)
    ours = logging.getLogger("autotune")
    collect = Collect()
    ours.addHandler(collect)
    monkeypatch.setattr(ours, "level", logging.INFO)
    stdout, filters, entries = sys.stdout, warnings.filters, list(warnings.filters)
    cls = get_pass(pass_type, path="passes.p")
    output, work = tmp_path / "out", tmp_path / "work"
    output.mkdir()
    work.mkdir()
    chatter = Chatter()
    chatter.start()
    try:  # from the HF folder: each of them runs the model builder (GPTQ and the mixed pass for their fp32 source)
        cls().run(ModelHandle(kind="hf", path=tiny_model, key="k"), cls.Params(**params),
                  PassContext(provider="CPUExecutionProvider", work_dir=work, data=calibration_data), output)
    finally:
        chatter.halt.set()
        chatter.join()
        ours.removeHandler(collect)
    log = (work / "model_builder.log").read_text()
    assert "Saving ONNX model" in log  # the builder's own output went to its log ...
    if params.get("precision") == "int8":
        assert "onnxruntime.quantization" in log  # ... and so did its quantizer's records
    assert chatter.rounds > 0
    assert not [line for line in Chatter.LINES if line in log]  # ... and nothing of the other thread's
    console = capfd.readouterr()
    out, err, fd1, fd2, logged = Chatter.LINES
    assert out in console.out and fd1 in console.out and err in console.err and fd2 in console.err
    assert logged in collect.messages
    assert chatter.stdouts == {id(stdout)}  # no sys.stdout swap that every thread would write into
    if pass_type != "ModelBuilder" or params.get("algo_config") == "gptq":
        assert during, "the int4 quantizer was not called"
        assert during["disable"] == logging.NOTSET and during["stdout"] is stdout
        assert during["filters"] is filters and during["filter_entries"] == entries
    assert logging.root.manager.disable == logging.NOTSET and sys.stdout is stdout
    assert warnings.filters is filters and list(warnings.filters) == entries
    assert (output / "genai_config.json").is_file()


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
