"""A single run run again with nothing changed: a lookup, not a run (issue 22 item 4).

The identical rerun rewrites no file of the output folder (mtimes kept), imports none of the heavy
libraries (checked in a fresh interpreter's ``sys.modules``) and still prints the result.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import autotune
from tests.conftest import tiny_config
from tests.search.test_study import EVALUATOR

HEAVY = ("torch", "transformers", "onnxruntime", "onnxruntime_genai", "matplotlib", "pandas", "datasets", "peft",
         "optuna.visualization")


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


def _rerun(config: Path) -> tuple[str, list[str]]:
    code = (
        "import json, sys\n"
        "from autotune.cli import main\n"
        "sys.argv = ['autotune', 'run', '--config', sys.argv[1]]\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        f"print('HEAVY=' + json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-c", code, str(config)], capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    heavy_line = next(line for line in proc.stdout.splitlines() if line.startswith("HEAVY="))
    return proc.stdout, json.loads(heavy_line.removeprefix("HEAVY="))


def test_an_identical_single_run_rewrites_nothing_and_imports_no_heavy_library(tmp_path: Path, tiny_model: Path,
                                                                                tone_file: Path) -> None:
    config = tiny_config(tiny_model, tone_file, tmp_path)
    config["passes"]["lora"]["training_args"]["max_steps"] = 2
    config["evaluators"] = {"tiny": json.loads(json.dumps(EVALUATOR))}
    config["data_configs"][0]["eval_dataset_size"] = 24
    config["engine"].update({"evaluator": "tiny", "pytorch_reference": False})  # the reference row is not what is checked
    path = tmp_path / "run.json"
    path.write_text(json.dumps(config))
    first = autotune.run(path)
    assert first.record is not None
    out = tmp_path / "out"
    before = _mtimes(out)
    assert {"report.html", "pareto.png", "trials.csv", "run.json", "study.db", "model/model.onnx"} <= set(before)

    printed, heavy = _rerun(path)

    assert heavy == []
    assert _mtimes(out) == before  # no file rewritten, not even with the same bytes
    assert "model:" in printed and str(out / "model") in printed  # the result is still printed
    assert first.record.metrics["accuracy-accuracy"].value is not None
    accuracy = f"{first.record.metrics['accuracy-accuracy'].value:.4g}"
    assert accuracy in printed


def test_a_changed_single_run_is_run_again(tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    config = tiny_config(tiny_model, tone_file, tmp_path)
    config["passes"]["lora"]["training_args"]["max_steps"] = 2
    first = autotune.run(config)
    config["passes"]["lora"]["r"] = 2  # another model: the stored result does not stand
    second = autotune.run(config)
    assert first.record is not None and second.record is not None
    assert second.record.model_key != first.record.model_key
    assert not any(p.cache_hit for p in second.record.passes if p.name == "lora")


def test_a_new_evaluator_version_measures_again(tmp_path: Path, tiny_model: Path, tone_file: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from autotune.evaluation import memory_probe
    from autotune.evaluation.latency import LatencyMetricType

    config = tiny_config(tiny_model, tone_file, tmp_path)
    config["passes"]["lora"]["training_args"]["max_steps"] = 2
    config["evaluators"] = {"tiny": json.loads(json.dumps(EVALUATOR))}
    config["data_configs"][0]["eval_dataset_size"] = 24
    config["engine"].update({"evaluator": "tiny", "pytorch_reference": False})
    autotune.run(config)
    probes: list[Any] = []
    real = memory_probe.run_probe
    monkeypatch.setattr(memory_probe, "run_probe", lambda *a, **k: probes.append(k) or real(*a, **k))
    autotune.run(config)
    assert probes == []  # unchanged: nothing measured
    monkeypatch.setattr(LatencyMetricType, "version", LatencyMetricType.version + 1)
    autotune.run(config)
    assert probes  # the cached latency is another version's: measured again
