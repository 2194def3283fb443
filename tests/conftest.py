"""Fixtures: a tiny Llama (hidden 64, 2 layers) with a small BPE tokenizer, and small data files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

# The tiny model is built by the package (the benchmarks use it too, without pytest); re-exported here.
from autotune.testing import TEMPLATE, make_tiny_llama

__all__ = ["TEMPLATE", "make_tiny_llama"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# No CPU training-precision probe in tests, in this process or the autotune subprocesses tests start (keys and
# Trainer step counts must not depend on the machine's bf16 instructions); the probe's own tests turn it back on.
os.environ["AUTOTUNE_PRECISION_PROBE"] = "off"

ROOT = Path(__file__).resolve().parents[1]
TONES = ROOT / "configs" / "data" / "tones.jsonl"
SHARED_TONES = ROOT.parent / "shared" / "data" / "tone-classification.jsonl"


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: one test process per core, at most 4 (each holds a tiny model, a builder process and the
    libraries: ~1.5 GB; the studies' subprocesses use the cores too)."""
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)))


# The longest modules (real studies in subprocesses: one to five minutes each on 2 cores), scheduled first: with a
# module per test process at a time (--dist loadscope), one that starts last would run on alone at the end.
LONG_MODULES = ("tests/test_crash_safety.py", "tests/search/test_workers.py", "tests/search/test_study.py",
                "tests/search/test_shared_store.py", "tests/search/test_one_flow.py", "tests/test_cli_commands.py",
                "tests/search/test_honest_splits.py", "tests/test_cached_rerun.py", "tests/search/test_jobs.py",
                "tests/search/test_duplicates.py", "tests/test_cache_budget.py", "tests/models/test_families.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONG_MODULES)}

    def order(item: pytest.Item) -> int:
        return rank.get(Path(str(item.path)).resolve().relative_to(ROOT).as_posix(), len(LONG_MODULES))

    items.sort(key=order)  # stable: the order within a module, and of the other modules, is kept


@pytest.fixture(autouse=True)
def cpu_without_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests train as on a CPU without bf16 instructions, so that no timing probe (precision_probe) picks
    their precision and their keys do not depend on the machine; tests of the probe say otherwise."""
    import autotune.device

    flags = autotune.device.cpu_flags()
    monkeypatch.setattr(autotune.device, "cpu_flags", lambda: flags - {"avx512_bf16", "amx_bf16"})


@pytest.fixture(scope="session")
def tone_rows() -> list[dict[str, str]]:
    return [json.loads(line) for line in TONES.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, tone_rows: list[dict[str, str]]) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama", [r["phrase"] for r in tone_rows])


@pytest.fixture(scope="session")
def tiny_onnx(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama built as fp32 ONNX once for the session (tests only read it)."""
    from autotune.passes.model_builder import ModelBuilderParams, build_onnx

    root = tmp_path_factory.mktemp("tiny-onnx")
    build_onnx(tiny_model, root / "fp32", ModelBuilderParams(precision="fp32"), provider="CPUExecutionProvider", work_dir=root / "work")
    return root / "fp32"


@pytest.fixture()
def tone_file(tmp_path: Path, tone_rows: list[dict[str, str]]) -> Path:
    path = tmp_path / "tones.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in tone_rows[:200]) + "\n")
    return path


def generate_one(model_dir: Path, prompt: str = "### Text: the storm is coming\n### The tone is:\n") -> list[int]:
    """Load an ONNX folder with onnxruntime-genai as a user would and generate one token."""
    import onnxruntime_genai as og

    model = og.Model(str(model_dir))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=48, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(og.Tokenizer(model).encode(prompt))
    generator.generate_next_token()
    return list(generator.get_next_tokens())


def tiny_config(model: Path, data: Path, work: Path, **overrides: Any) -> dict[str, Any]:
    """A small single-run config dict over the tiny model (tests tweak it)."""
    config: dict[str, Any] = {
        "input_model": {"type": "HfModel", "model_path": str(model)},
        "data_configs": [{
            "name": "tones",
            "type": "HuggingfaceContainer",
            "load_dataset_config": {"params": {"data_name": "json", "data_files": str(data), "split": "train"}},
            "pre_process_data_config": {"params": {"text_cols": ["phrase", "tone"], "text_template": TEMPLATE, "source_max_len": 64}},
            "eval_dataset_size": 40,
        }],
        "passes": {
            "lora": {"type": "LoRA", "r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"],
                     "training_args": {"max_steps": 4, "per_device_train_batch_size": 8, "learning_rate": 1e-3, "logging_steps": 2}},
            "merge": {"type": "MergeAdapterWeights"},
            "build": {"type": "ModelBuilder", "precision": "int4", "block_size": 32},
        },
        "engine": {"search_strategy": False, "cache_dir": str(work / "cache"), "output_dir": str(work / "out")},
    }
    for key, value in overrides.items():
        config[key] = value
    return config


def skip_or_fail_in_ci(reason: str) -> None:
    """Skip a test whose prerequisite is missing, but fail it under CI=true: a broken install must not pass CI green."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and a test prerequisite is missing: {reason}", pytrace=False)
    pytest.skip(reason)
