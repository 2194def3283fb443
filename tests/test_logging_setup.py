"""Only known-noise messages are filtered: any other warning still shows after logging setup (a library's
once, through autotune's handler), and the model builder reroutes its own loggers for the build instead
of switching logging off process-wide."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


SETUP = "from autotune.logging_setup import setup_logging; from autotune.models.hub import go_offline; go_offline(); setup_logging(1)\n"


def test_unrelated_warnings_still_show_after_logging_setup() -> None:
    proc = _python(SETUP + (
        "import warnings\n"
        "warnings.warn('a user warning from elsewhere', UserWarning)\n"
        "warnings.warn('a future warning from elsewhere', FutureWarning)\n"
        "warnings.warn('a deprecation from elsewhere', DeprecationWarning)\n"
        "warnings.warn('`past_key_values` is deprecated and will be removed in version 5.40.0 for `X.forward`.', FutureWarning)\n"
        "warnings.warn('`is_gradient_checkpointing` is deprecated and will be removed in v6.', FutureWarning)\n"
    ))
    assert proc.returncode == 0, proc.stderr
    for shown in ("UserWarning: a user warning from elsewhere", "FutureWarning: a future warning from elsewhere",
                  "DeprecationWarning: a deprecation from elsewhere"):
        assert shown in proc.stderr, proc.stderr
    assert "past_key_values" not in proc.stderr and "is_gradient_checkpointing" not in proc.stderr


def test_the_transformers_cache_deprecation_log_line_is_dropped_and_others_are_not() -> None:
    proc = _python(SETUP + (
        "from transformers.utils import logging as hf_logging\n"
        "log = hf_logging.get_logger('transformers.utils.generic')\n"
        "log.warning_once('`past_key_values`/`cache_params` are deprecated. Use `cache` instead.')\n"
        "log.warning('another transformers warning')\n"
    ))
    assert proc.returncode == 0, proc.stderr
    shown = proc.stdout + proc.stderr
    assert "past_key_values" not in shown
    assert shown.count("another transformers warning") == 1  # shown once, through autotune's handler


def test_library_warnings_show_once_at_warning_through_autotunes_handler_and_the_kernels_line_does_not() -> None:
    proc = _python(SETUP + (
        "import peft  # bitsandbytes' CPU backend asks the kernels package for a Hub kernel at import\n"
        "from transformers.utils import logging as hf_logging\n"
        "for _ in range(3):\n"
        "    hf_logging.get_logger('transformers.trainer').warning('a trainer warning')\n"
        "    import logging; logging.getLogger('peft.tuners.lora').warning('a peft warning')\n"
        "hf_logging.get_logger('transformers.trainer').info('a trainer info line')\n"
        "import datasets, optuna\n"
        "logging.getLogger('datasets.builder').warning('a datasets warning')\n"
        "optuna.logging.get_logger('optuna.storages').warning('an optuna warning')\n"
        "from huggingface_hub.utils import logging as hub_logging\n"
        "hub_logging.get_logger('huggingface_hub.file_download').warning('a hub warning')\n"
    ))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout  # autotune's console handler (rich) writes to stdout
    for message in ("transformers.trainer: a trainer warning", "peft.tuners.lora: a peft warning",
                    "datasets.builder: a datasets warning", "optuna.storages: an optuna warning",
                    "huggingface_hub.file_download: a hub warning"):
        assert out.count(message) == 1, out
        line = next(line for line in out.splitlines() if message in line)
        assert line.lstrip().startswith("WARNING"), line
    assert "a trainer info line" not in out + proc.stderr
    assert "a trainer warning" not in proc.stderr and "a peft warning" not in proc.stderr  # no second, raw copy
    assert "Skipping publisher trust check" not in out + proc.stderr
    assert "gemm_4bit_forward" not in out + proc.stderr


def test_the_quantizers_basicconfig_does_not_send_library_info_to_the_terminal() -> None:
    proc = _python(SETUP + (
        "import onnxruntime.quantization.matmul_nbits_quantizer  # calls logging.basicConfig(level=INFO) at import\n"
        "import logging\n"
        "logging.getLogger('some.library').info('an info line')\n"
        "logging.getLogger('some.library').warning('a library warning')\n"
    ))
    assert proc.returncode == 0, proc.stderr
    assert "an info line" not in proc.stderr
    assert "a library warning" in proc.stderr  # warnings still reach the terminal, as Python's last resort would


def test_the_builder_reroutes_its_loggers_without_disabling_logging(tiny_model: Path, tmp_path: Path) -> None:
    import threading

    from autotune.passes.model_builder import BUILDER_LOGGERS, ModelBuilderParams, build_onnx

    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    ours = logging.getLogger("autotune")
    collect = Collect(level=logging.INFO)
    ours.addHandler(collect)
    level = ours.level
    ours.setLevel(logging.INFO)
    before = {name: (logging.getLogger(name).level, logging.getLogger(name).propagate, list(logging.getLogger(name).handlers))
              for name in BUILDER_LOGGERS}
    during: dict[str, Any] = {}
    done = threading.Event()

    def heartbeat() -> None:  # another thread, with a look at logging while the build runs (in its own process)
        while not done.is_set():
            during["disabled"] = logging.root.manager.disable
            logging.getLogger("autotune.heartbeat").info("autotune still logs during the build")
            done.wait(0.01)

    other = threading.Thread(target=heartbeat)
    other.start()
    try:
        build_onnx(tiny_model, tmp_path / "out", ModelBuilderParams.model_validate({"precision": "int8"}),
                   provider="CPUExecutionProvider", work_dir=tmp_path / "work")
    finally:
        done.set()
        other.join()
        ours.removeHandler(collect)
        ours.setLevel(level)
    assert during["disabled"] == logging.NOTSET  # no process-wide logging.disable
    assert "autotune still logs during the build" in seen
    log = (tmp_path / "work" / "model_builder.log").read_text()
    assert "onnxruntime.quantization" in log  # the quantizer's records went to the build log
    after = {name: (logging.getLogger(name).level, logging.getLogger(name).propagate, list(logging.getLogger(name).handlers))
             for name in BUILDER_LOGGERS}
    assert after == before
