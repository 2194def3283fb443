"""On a CUDA GPU: LoRA and QLoRA train there, and what they give builds and runs on the CPU provider.

Marked ``gpu`` and skipped where torch sees no GPU (CI has none). Run on a GPU machine with
``python -m pytest -q -m gpu tests/passes/test_gpu.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import autotune
from autotune.device import cuda_available, cuda_provider_problem
from tests.conftest import generate_one, tiny_config

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU visible to torch")]


def train_stats(cache_dir: Path) -> dict[str, object]:
    (stats,) = cache_dir.glob("models/*/model/train_stats.json")  # the one adapter trained
    return json.loads(stats.read_text())


def test_lora_trains_on_cuda_and_builds_for_the_cpu_provider(tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    config = tiny_config(tiny_model, tone_file, tmp_path)
    config["engine"]["device"] = "cuda"
    autotune.run(config)
    stats = train_stats(Path(config["engine"]["cache_dir"]))
    assert stats["device"] == "cuda" and stats["gpu_peak_mib"] > 0  # type: ignore[operator]
    assert len(generate_one(tmp_path / "out" / "model")) == 1  # a CPU-provider int4 build of the GPU-trained model


def test_auto_picks_the_gpu_and_bf16_where_supported(tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    import torch

    config = tiny_config(tiny_model, tone_file, tmp_path)
    del config["passes"]["build"], config["passes"]["merge"]
    autotune.run(config)
    stats = train_stats(Path(config["engine"]["cache_dir"]))
    assert stats["device"] == "cuda"
    assert stats["precision"] == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")


def test_qlora_trains_on_cuda_records_gpu_peak_memory_and_merges(tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    from autotune.passes.qlora import four_bit_support
    from tests.conftest import skip_or_fail_in_ci

    reason = four_bit_support("cuda")
    if reason is not None:
        skip_or_fail_in_ci(f"no 4-bit bitsandbytes on CUDA here: {reason}")
    config = tiny_config(tiny_model, tone_file, tmp_path)
    config["engine"]["device"] = "cuda"
    config["passes"]["lora"].update({"type": "QLoRA", "quant_type": "nf4"})
    config["passes"]["build"]["precision"] = "fp32"
    autotune.run(config)
    stats = train_stats(Path(config["engine"]["cache_dir"]))
    assert stats["device"] == "cuda" and stats["gpu_peak_mib"] > 0  # type: ignore[operator]
    assert len(generate_one(tmp_path / "out" / "model")) == 1


@pytest.mark.skipif(cuda_provider_problem() is not None, reason=f"CUDA provider unusable here: {cuda_provider_problem()}")
def test_a_cuda_provider_build_loads_in_genai_cuda(tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    config = tiny_config(tiny_model, tone_file, tmp_path)
    config["engine"]["device"] = "cuda"
    config["engine"]["execution_providers"] = ["CUDAExecutionProvider"]
    autotune.run(config)
    genai = json.loads((tmp_path / "out" / "model" / "genai_config.json").read_text())
    assert "cuda" in json.dumps(genai["model"]["decoder"]["session_options"]).lower()
    assert len(generate_one(tmp_path / "out" / "model")) == 1
