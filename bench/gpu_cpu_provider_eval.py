"""A fine-tune trained on the GPU, merged, built int4 for the CPU provider and evaluated there (issue 12: where
the CUDA provider cannot be installed, verify the CPU-provider build of a GPU-trained model).

One single run of autotune: LoRA (r 16, q/k/v/o) on ``--device`` -> merge -> ModelBuilder int4 -> the
benchmarks' cheap evaluator (label-scoring accuracy, decode latency, size) on CPUExecutionProvider. The model is
``bench_gpu_steps``' random weights of ``--shape`` (no hub here), so the accuracy says that the evaluation
runs, not how good a fine-tune is.

    python bench/gpu_cpu_provider_eval.py --device cuda [--shape smollm2] [--steps 20]
    .venv/bin/python bench/gpu_cpu_provider_eval.py --device cpu --shape tiny --steps 4     # the machinery, on a CPU
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from bench_gpu_steps import LORA, model_folder  # noqa: E402


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0], extra={"device": "cuda", "shape": "smollm2", "steps": 20})
    import autotune
    from autotune.device import device_info, resolve_device

    device = resolve_device(args.device)
    report = common.Report("gpu_cpu_provider_eval", f"{args.shape}-{device}", "Trained on the GPU, built and evaluated on the CPU provider")
    report.data["device"] = device_info(device)
    model = model_folder(args.shape)
    work = common.fresh(common.RESULTS / f"work-gpu_cpu_provider_eval-{args.shape}")
    cfg = common.config("tiny", work, **{k: v for k, v in LORA.items() if k != "learning_rate"})
    cfg["input_model"]["model_path"] = str(model)
    cfg["passes"]["lora"]["training_args"].update({"max_steps": args.steps, "logging_steps": args.steps})
    cfg["engine"]["device"] = device
    autotune.run(cfg)
    (stats_file,) = (work / "cache").glob("models/*/model/train_stats.json")
    stats = json.loads(stats_file.read_text())
    metrics = json.loads((work / "out" / "metrics.json").read_text())
    genai = json.loads((work / "out" / "model" / "genai_config.json").read_text())
    report.data.update({"train_stats": stats, "metrics": metrics, "genai_session_options": genai["model"]["decoder"]["session_options"]})
    report.section("Training (where the adapter was trained)", common.table(["key", "value"], [[k, v] for k, v in stats.items()
                                                                                                if k != "history"]))
    report.section("Evaluation of the int4 build on CPUExecutionProvider",
                   "```json\n" + json.dumps(metrics, indent=2, default=str)[:4000] + "\n```")
    report.write()


if __name__ == "__main__":
    main()
