"""The model builder's own process (autotune.builder.process): a failed build raises its error's type
with the builder's traceback (in the log and as the cause), and a builder process that died is replaced."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

import autotune.builder.process as builder_process
from autotune.passes.model_builder import ModelBuilderParams, build_onnx


def build(model: Path, root: Path) -> Path:
    build_onnx(model, root / "out", ModelBuilderParams(precision="fp32"), provider="CPUExecutionProvider", work_dir=root / "work")
    return root / "work" / "model_builder.log"


def test_a_failed_build_raises_its_own_type_with_the_builders_traceback(tmp_path: Path) -> None:
    (tmp_path / "not-a-model").mkdir()
    with pytest.raises(ValueError, match="Unrecognized model") as info:
        build(tmp_path / "not-a-model", tmp_path)
    log = tmp_path / "work" / "model_builder.log"
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "ValueError: Unrecognized model" in text
    assert str(log) in str(info.value)
    cause = info.value.__cause__
    assert isinstance(cause, builder_process.ChildTraceback) and "ValueError: Unrecognized model" in cause.text


def test_an_error_type_this_process_cannot_make_is_a_runtime_error_naming_it() -> None:
    result = {"module": "some.library", "name": "BuildFailure", "message": "it broke", "traceback": "Traceback ...\n"}
    error = builder_process._error(result, Path("model_builder.log"))
    assert type(error) is RuntimeError and str(error).startswith("some.library.BuildFailure: it broke")
    error = builder_process._error({**result, "module": "builtins", "name": "UnicodeDecodeError"}, Path("x.log"))
    assert type(error) is RuntimeError  # a builtin type that takes other arguments than a message
    error = builder_process._error({**result, "module": "builtins", "name": "MemoryError"}, Path("x.log"))
    assert type(error) is MemoryError and str(error).startswith("it broke")


def test_a_builder_process_that_died_is_replaced_at_the_next_build(tiny_model: Path, tmp_path: Path) -> None:
    build(tiny_model, tmp_path / "first")
    worker = builder_process._WORKER
    assert worker is not None and worker.poll() is None
    os.kill(worker.pid, signal.SIGKILL)  # as the out-of-memory killer would
    worker.wait()
    assert "Saving ONNX model" in build(tiny_model, tmp_path / "second").read_text()
    assert builder_process._WORKER is not None and builder_process._WORKER.pid != worker.pid


def test_the_builder_process_outlives_the_thread_that_started_it_and_ends_with_its_parent(tmp_path: Path) -> None:
    import subprocess
    import sys
    import threading
    import time

    # Started from a short-lived thread: it serves on after that thread ends (PR_SET_PDEATHSIG would kill it).
    saved = builder_process._WORKER, builder_process._OWNER
    builder_process._WORKER = None
    try:
        thread = threading.Thread(target=builder_process._worker)
        thread.start()
        thread.join()
        child = builder_process._WORKER
        assert child is not None
        time.sleep(1.5)
        assert child.poll() is None
        builder_process._stop(kill=True)
    finally:
        builder_process._WORKER, builder_process._OWNER = saved

    # Its parent killed with SIGKILL (no atexit, stdin not closed by anyone but the kernel): it ends too.
    code = ("import sys, time; import autotune.builder.process as b; w = b._worker(); "
            "print(w.pid, flush=True); time.sleep(600)")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    pid = int(parent.stdout.readline())
    time.sleep(1.0)  # the child is up and idle, its watchdog running
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        # A zombie is gone for our purpose: its parent (now init, or a subreaper) reaps it.
        status = Path(f"/proc/{pid}/status")
        if status.exists() and "State:\tZ" in status.read_text():
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"the builder process {pid} outlived its killed parent")
