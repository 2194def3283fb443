"""Shared pieces of the benchmarks: the machine header, statistics, the report writer, models and configs.

Every script is run as ``python bench/<script>.py --model tiny|smollm2 [--repeats N]``; its report is
printed as Markdown and written to ``results/bench/<script>-<model>.{json,md}``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "bench"
TONES = ROOT / "configs" / "data" / "tones.jsonl"
TEMPLATE = "### Text: {phrase}\n### The tone is:\n{tone}"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_name, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")

# Fine-tune and build settings of one trial, per model. SmolLM2's step counts are small so that a
# full benchmark stays within about half an hour on a 2-core CPU.
SETTINGS: dict[str, dict[str, Any]] = {
    "tiny": {"r": 4, "alpha": 8, "lora_dropout": 0.05, "target_modules": ["q_proj", "v_proj"], "learning_rate": 1e-3,
             "max_steps": 4, "batch_size": 8, "seed": 0, "source_max_len": 64, "eval_dataset_size": 40, "block_size": 32},
    "smollm2": {"r": 16, "alpha": 32, "lora_dropout": 0.05, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
                "learning_rate": 1e-3, "max_steps": 20, "batch_size": 8, "seed": 0, "source_max_len": 128, "eval_dataset_size": 80,
                "block_size": 32},
}
# Two LoRA target sets used where a benchmark varies the fine-tune (both models are Llama-shaped).
TARGET_SETS = [["q_proj", "v_proj"], ["q_proj", "k_proj", "v_proj", "o_proj"]]


def parse_args(description: str, *, repeats: int = 1, model: str = "tiny", extra: dict[str, Any] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", choices=sorted(SETTINGS), default=model,
                        help=f"tiny (fast, built here) or smollm2 (the real model); default {model}")
    parser.add_argument("--repeats", type=int, default=repeats, help=f"repeats of the measurement (default {repeats})")
    for name, default in (extra or {}).items():
        parser.add_argument(f"--{name}", type=type(default), default=default)
    return parser.parse_args()


# -- the machine ------------------------------------------------------------------------------------
def header() -> dict[str, Any]:
    """Machine, versions and thread settings: the top of every report."""
    import optuna
    import torch

    from autotune.evaluation.base import environment

    info: dict[str, Any] = dict(environment())
    info.update({
        "optuna": optuna.__version__,
        "platform": platform.platform(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_num_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "(unset)"),
        "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS", "(unset)"),
        "nice": os.nice(0),
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    })
    return info


# -- statistics and reports -------------------------------------------------------------------------
def stats(values: list[float]) -> dict[str, float]:
    """median/min/max over repeats."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, dict) and "median" in value:
        if value["n"] == 1:
            return fmt(value["median"], digits)
        return f"{fmt(value['median'], digits)} ({fmt(value['min'], digits)}–{fmt(value['max'], digits)})"
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 10 ** digits else f"{value:.0f}"
    return str(value)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


class Report:
    """Collects Markdown sections and JSON data; ``write()`` prints the report and saves both files."""

    def __init__(self, script: str, model: str, title: str) -> None:
        self.name = f"{script}-{model}"
        self.began = time.perf_counter()
        self.data: dict[str, Any] = {"benchmark": script, "model": model, "machine": header()}
        self.parts = [f"# {title} ({model})", "", table(["machine / setting", "value"], [[k, v] for k, v in self.data["machine"].items()])]

    def section(self, title: str, body: str) -> None:
        self.parts += ["", f"## {title}", "", body]

    def write(self) -> Path:
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.data["benchmark_wall_s"] = round(time.perf_counter() - self.began, 1)
        text = "\n".join([*self.parts, "", f"Benchmark wall time: {self.data['benchmark_wall_s']:.0f} s."]) + "\n"
        print(text)
        (RESULTS / f"{self.name}.md").write_text(text)
        path = RESULTS / f"{self.name}.json"
        path.write_text(json.dumps(self.data, indent=2, default=str))
        print(f"report: {path} (and {self.name}.md)")
        return path


# -- models, data and configs -----------------------------------------------------------------------
def tiny_model() -> Path:
    """The tests' tiny Llama (hidden 64, 2 layers, autotune.testing), built once into results/bench/tiny-model."""
    folder = RESULTS / "tiny-model"
    if not (folder / "config.json").is_file():
        from autotune.testing import make_tiny_llama

        rows = [json.loads(line) for line in TONES.read_text().splitlines() if line.strip()]
        make_tiny_llama(folder, [r["phrase"] for r in rows])
    return folder


def smollm2_model() -> Path:
    """SmolLM2-135M-Instruct as a safetensors folder, converted once from the demo GGUF into
    results/bench/smollm2-import (so no benchmark pays the conversion, and fresh caches stay fresh)."""
    from autotune.cache import Cache
    from autotune.config_checks import load_config
    from autotune.pipeline import resolve_input_model

    cfg = load_config({"input_model": {"type": "HfModel", "model_path": "HuggingFaceTB/SmolLM2-135M-Instruct"}}, base_dir=ROOT)
    return resolve_input_model(cfg, Cache(RESULTS / "smollm2-import")).path


@functools.cache
def model_path(model: str) -> Path:
    return tiny_model() if model == "tiny" else smollm2_model()


def cheap_evaluator(*, latency: bool = True, size: bool = True) -> dict[str, Any]:
    """Accuracy by label scoring (no perplexity), a short latency run and size on disk (no memory probe)."""
    metrics: list[dict[str, Any]] = [{"name": "accuracy", "type": "accuracy", "sub_types": [{"name": "accuracy", "priority": 1}],
                                      "user_config": {"mode": "label_scoring", "perplexity": False}}]
    if latency:
        metrics.append({"name": "latency", "type": "latency", "sub_types": [{"name": "decode_ms_per_token_p50", "priority": 2}],
                        "user_config": {"prompt_tokens": 32, "generate_tokens": 16, "warmup": 1, "repeats": 3}})
    if size:
        metrics.append({"name": "footprint", "type": "footprint", "sub_types": [{"name": "size_mb", "priority": 3}],
                        "user_config": {"memory": False}})
    return {"metrics": metrics}


def config(model: str, work: Path, *, evaluator: dict[str, Any] | None = None, precision: Any = "int4",
           search: dict[str, Any] | None = None, **lora: Any) -> dict[str, Any]:
    """A run config dict: LoRA -> merge -> ModelBuilder with ``model``'s settings (``lora`` overrides
    LoRA parameters, a list being a search), a single run unless ``search`` is given.
    The baseline (input model) is never evaluated; early stopping and intermediate eval losses are off."""
    s = SETTINGS[model]
    lora_pass = {"type": "LoRA", "r": s["r"], "alpha": s["alpha"], "lora_dropout": s["lora_dropout"],
                 "target_modules": s["target_modules"], "learning_rate": s["learning_rate"], "report_every": 0,
                 "training_args": {"max_steps": s["max_steps"], "per_device_train_batch_size": s["batch_size"], "seed": s["seed"],
                                   "logging_steps": max(1, s["max_steps"] // 2)}}
    lora_pass.update(lora)
    strategy: Any = False
    if search is not None:
        strategy = {"early_stop": {"enabled": False}, **search}
    return {
        "input_model": {"type": "HfModel", "model_path": str(model_path(model))},
        "data_configs": [{
            "name": "tones", "type": "HuggingfaceContainer",
            "load_dataset_config": {"data_name": "json", "data_files": str(TONES), "split": "train"},
            "pre_process_data_config": {"text_cols": ["phrase", "tone"], "text_template": TEMPLATE, "source_max_len": s["source_max_len"]},
            "eval_dataset_size": s["eval_dataset_size"],
        }],
        "passes": {"lora": lora_pass, "merge": {"type": "MergeAdapterWeights"},
                   "build": {"type": "ModelBuilder", "precision": precision, "block_size": s["block_size"]}},
        "evaluators": {"bench": evaluator or cheap_evaluator()},
        "engine": {"search_strategy": strategy, "evaluator": "bench", "evaluate_input_model": False,
                   "execution_providers": ["CPUExecutionProvider"], "cache_dir": str(work / "cache"), "output_dir": str(work / "out"),
                   "log_severity_level": 2},
    }


def load(config_dict: dict[str, Any]) -> Any:
    from autotune.config_checks import load_config

    return load_config(config_dict, base_dir=ROOT)


def fresh(path: Path) -> Path:
    """An empty folder at ``path`` (removed first if it exists)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def prepare(model: str) -> Path:
    """Before any timing: import the heavy libraries once (so the first timed run does not pay for
    them alone) and build or convert the input model; returns the model folder."""
    warm_imports()
    return model_path(model)


def warm_imports() -> None:
    import onnxruntime_genai  # noqa: F401
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
    from onnxruntime_genai.models import builder  # noqa: F401

    import autotune.evaluation  # noqa: F401
