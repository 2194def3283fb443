"""Latency and peak memory come from one fresh process per model; size from the folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from autotune.cache import Cache
from autotune.config_checks import load_config
from autotune.evaluation import memory_probe
from autotune.evaluation.base import EvalModel
from autotune.evaluation.footprint import folder_bytes
from autotune.evaluation.runner import ModelEvaluator
from autotune.pipeline import Pipeline
from tests.conftest import tiny_config

LATENCY = {"name": "lat", "type": "latency", "sub_types": [{"name": "decode_ms_per_token_p50"}, {"name": "ttft_ms_p50"}],
           "user_config": {"prompt_tokens": 8, "generate_tokens": 4, "warmup": 0, "repeats": 2, "cv_threshold": 100}}
FOOTPRINT = {"name": "mem", "type": "footprint", "sub_types": [{"name": "size_mb"}, {"name": "peak_rss_mb"}, {"name": "model_rss_mb"}]}


@pytest.fixture()
def probes(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every fresh process started, with its settings."""
    calls: list[dict[str, Any]] = []
    real = memory_probe.run_probe

    def counted(model: Any, **kwargs: Any) -> dict[str, Any]:
        calls.append(kwargs)
        return real(model, **kwargs)

    monkeypatch.setattr(memory_probe, "run_probe", counted)
    return calls


def evaluate(tmp_path: Path, model_dir: Path, tone_file: Path, metrics: list[dict[str, Any]]) -> dict[str, Any]:
    raw = tiny_config(model_dir, tone_file, tmp_path)
    raw["evaluators"] = {"e": {"metrics": metrics}}
    raw["engine"]["evaluator"] = "e"
    config = load_config(raw, base_dir=tmp_path)
    cache = Cache(config.engine.cache_dir)
    evaluator = ModelEvaluator(config, cache=cache, data_loader=Pipeline(config, cache=cache).data)
    result = evaluator.evaluate(EvalModel(path=model_dir, kind="onnx", key="tiny-onnx"))
    assert list(result) == [s.key for s in evaluator.specs]  # the config's order, whatever ran first
    return result


def test_latency_and_peak_memory_share_one_fresh_process(tmp_path: Path, tiny_onnx: Path, tone_file: Path,
                                                          probes: list[dict[str, Any]]) -> None:
    metrics = evaluate(tmp_path, tiny_onnx, tone_file, [FOOTPRINT, LATENCY])  # footprint first in the config
    assert len(probes) == 1 and probes[0]["settings"]["repeats"] == 2  # the latency process, nothing else
    assert metrics["lat-decode_ms_per_token_p50"].value > 0
    assert metrics["lat-ttft_ms_p50"].details["process"].startswith("fresh")
    peak = metrics["mem-peak_rss_mb"]
    assert peak.value > metrics["mem-model_rss_mb"].value > 0
    assert "latency" in peak.details["measured_in"] and peak.details["rss_source"] == memory_probe.OWN_PEAK
    assert metrics["mem-size_mb"].value == pytest.approx(folder_bytes(tiny_onnx) / 1e6)


def test_memory_alone_starts_its_own_fresh_process(tmp_path: Path, tiny_onnx: Path, tone_file: Path,
                                                   probes: list[dict[str, Any]]) -> None:
    metrics = evaluate(tmp_path, tiny_onnx, tone_file, [FOOTPRINT])
    assert len(probes) == 1 and probes[0].get("settings") is None
    assert metrics["mem-peak_rss_mb"].value > 0 and "latency" not in metrics["mem-peak_rss_mb"].details["measured_in"]


def test_the_probe_command_line_of_four_arguments_still_reports_memory(tiny_onnx: Path) -> None:
    """bench/int4_vs_fp32.py runs the module with four arguments and reads the last JSON line."""
    out = memory_probe.run_probe(EvalModel(path=tiny_onnx, kind="onnx", key=""), provider="CPUExecutionProvider", tokens=3)
    assert out["peak_rss_mb"] > out["runtime_rss_mb"] > 0 and "latency" not in out


def test_the_latency_process_of_an_onnx_model_imports_neither_torch_nor_transformers(tiny_onnx: Path) -> None:
    """Their import took ~2 s of every measurement's start (issue 31 item 3): an ONNX model needs neither."""
    import subprocess
    import sys

    settings = json.dumps({"prompt_tokens": 8, "generate_tokens": 4, "warmup": 0, "repeats": 2})
    code = ("import sys, io, contextlib\n"
            f"sys.argv = ['probe', {str(tiny_onnx)!r}, 'onnx', 'CPUExecutionProvider', '4', {settings!r}]\n"
            "from autotune.evaluation import memory_probe\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    memory_probe.main()\n"
            "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'peft') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
