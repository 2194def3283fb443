"""engine.device (where LoRA/QLoRA train) and the ONNX Runtime provider checks, on a CPU-only machine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import autotune.device as device
from autotune.cache import Cache, hash_key
from autotune.config_checks import load_config
from autotune.errors import ConfigError
from autotune.pipeline import Pipeline
from tests.conftest import tiny_config

needs_no_gpu = pytest.mark.skipif(device.cuda_available(), reason="checks what happens without a GPU")


REAL_PROBES = (device.cuda_available, device.cuda_provider_problem)


@pytest.fixture()
def fresh_probes() -> Iterator[None]:
    """The cached probes forget what they found (before and after a test that patches what they read)."""
    for probe in REAL_PROBES:
        probe.cache_clear()
    yield
    for probe in REAL_PROBES:
        probe.cache_clear()


def test_auto_resolves_to_cuda_only_when_torch_sees_a_gpu(monkeypatch: pytest.MonkeyPatch, fresh_probes: None) -> None:
    monkeypatch.setattr(device, "cuda_available", lambda: False)
    assert [device.resolve_device(s) for s in ("auto", "cpu", "cuda")] == ["cpu", "cpu", "cuda"]
    monkeypatch.setattr(device, "cuda_available", lambda: True)
    assert [device.resolve_device(s) for s in ("auto", "cpu", "cuda")] == ["cuda", "cpu", "cuda"]
    with pytest.raises(ValueError):
        device.resolve_device("gpu")


@needs_no_gpu
def test_device_cuda_without_a_gpu_is_one_line_at_validate(tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    import yaml
    from typer.testing import CliRunner

    from autotune.cli import app

    config = tiny_config(tiny_model, tone_file, tmp_path)
    config["engine"]["device"] = "cuda"
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert info.value.where == "engine.device"
    assert "no CUDA GPU" in info.value.message and "\n" not in str(info.value)
    path = tmp_path / "cuda.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["validate", "--config", str(path)])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: engine.device: cuda asked for") and len(result.output.strip().splitlines()) == 1


def test_auto_and_cpu_validate_anywhere(tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    for setting in ("auto", "cpu"):
        config = tiny_config(tiny_model, tone_file, tmp_path)
        config["engine"]["device"] = setting
        assert load_config(config).engine.device == setting
    config["engine"]["device"] = "gpu"
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert info.value.where == "engine.device"


def test_device_info_names_the_cpu_and_its_bf16_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    info = device.device_info("cpu")
    assert info["device"] == "cpu" and info["cpu"] and info["torch"]
    monkeypatch.setattr(device, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "sse2"}))
    info = device.device_info("cpu")
    assert info["cpu_flags"] == "avx2 avx512f avx512_bf16 amx_bf16" and info["bf16"] == "true"
    monkeypatch.setattr(device, "cpu_flags", lambda: frozenset({"avx2"}))
    assert device.device_info("cpu")["bf16"] == "false"


@pytest.mark.skipif(device._installed("onnxruntime-genai-cuda") is not None, reason="the [gpu] extra is installed here")
def test_a_cuda_build_without_the_gpu_extra_is_one_line_naming_it(tmp_path: Path, tiny_model: Path, tone_file: Path,
                                                                  fresh_probes: None) -> None:
    config = tiny_config(tiny_model, tone_file, tmp_path)
    config["engine"]["execution_providers"] = ["CUDAExecutionProvider"]
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert info.value.where == "engine.execution_providers"
    assert "[gpu] extra" in info.value.message and "onnxruntime-genai-cuda" in info.value.message
    assert "\n" not in str(info.value)


def test_an_onnxruntime_gpu_that_falls_back_to_the_cpu_is_detected(monkeypatch: pytest.MonkeyPatch, fresh_probes: None) -> None:
    # What a CUDA-12 onnxruntime-gpu does on a CUDA-13 machine: it lists CUDAExecutionProvider, then a
    # session silently runs on the CPU. This CPU onnxruntime does the same when told CUDA is listed,
    # so the real session-creation path is what the check sees.
    monkeypatch.setattr(device, "ort_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(device, "_installed", lambda name: "1.32.0")
    problem = device.cuda_provider_problem()
    assert problem is not None and "falls back to the CPU" in problem and "\n" not in problem
    with pytest.raises(ConfigError) as info:
        device.check_provider("CUDAExecutionProvider")
    assert info.value.where == "engine.execution_providers"
    device.check_provider("CPUExecutionProvider")  # the CPU needs nothing


def test_the_device_enters_training_keys_only_where_it_changes_the_result(tmp_path: Path, tiny_model: Path, tone_file: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import autotune.training.precision_probe as precision_probe
    from autotune.training.precision import StepProbe

    config = load_config(tiny_config(tiny_model, tone_file, tmp_path))
    pipeline = Pipeline(config, cache=Cache(config.engine.cache_dir))

    def keys(on: str) -> list[str]:
        pipeline._device = on
        chain = pipeline.keys()
        return [key for _, _, key in chain]

    monkeypatch.setattr("autotune.device.bf16_supported", lambda on: False)
    cpu, cuda = keys("cpu"), keys("cuda")
    # CPU fp32 keys are those from before engine.device existed: old caches stay valid.
    step, params, _ = pipeline.keys()[0]
    before = hash_key({"parent": pipeline.input_model().key, "pass": "LoRA", "params": params.resolved(),
                       "data": pipeline.data(step.data_name).key})
    assert cpu[0] == before
    # A GPU-trained adapter differs, and so does everything built from it.
    assert all(a != b for a, b in zip(cpu, cuda))
    # bf16 picked by default (auto on a GPU that supports it; on the CPU only if made the default) differs too.
    monkeypatch.setattr("autotune.device.bf16_supported", lambda on: True)
    # The CPU's bf16 is decided by a probe (tests/training/test_precision_probe.py); here it finds no gain.
    monkeypatch.setattr(precision_probe, "trainer_probe", lambda **_: StepProbe(seconds=1.0, loss=1.0))
    assert keys("cuda")[0] not in (cuda[0], cpu[0])
    assert keys("cpu")[0] == cpu[0]


def test_the_provider_probe_ignores_orts_warning_without_dropping_filters_added_meanwhile(
        monkeypatch: pytest.MonkeyPatch, recwarn: pytest.WarningsRecorder) -> None:
    import threading
    import warnings

    import onnxruntime as ort

    real_session = ort.InferenceSession
    added = "a filter another thread adds while the probe runs"

    def spy(*args: Any, **kwargs: Any) -> Any:
        warnings.warn("provider not available (as ORT says it)", UserWarning, stacklevel=1)  # ignored for the call
        other = threading.Thread(target=lambda: warnings.filterwarnings("ignore", message=added))
        other.start()
        other.join()
        return real_session(*args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    before = list(warnings.filters)
    assert device.session_providers("CPUExecutionProvider") == ["CPUExecutionProvider"]
    assert not [w for w in recwarn if "provider not available" in str(w.message)]
    # The other thread's filter survives the call (warnings.catch_warnings would put back the list as it was before);
    # the probe's own "ignore UserWarning" entry is gone.
    assert [f for f in warnings.filters if f[1] is not None and f[1].pattern == added]
    assert [f for f in warnings.filters if not (f[1] is not None and f[1].pattern == added)] == before
