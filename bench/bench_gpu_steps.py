"""LoRA and QLoRA training steps/s: autotune's pass against a plain peft + Trainer loop on the same device
and data (issue 12 item 7; goal on a GPU: autotune >= 0.95 of plain).

The model is random weights of SmolLM2-135M's shape (``--shape smollm2``; ``tiny`` for a quick check)
with the tests' small tokenizer; the data are the tone rows tokenised by autotune (both sides get the same
features). Each side trains ``--steps`` steps of batch 8 in turn, ``--repeats`` times, alternating; steps/s
come from the Trainer's own ``train_runtime``. Before each kind's runs, one untimed plain run of ``--warmup``
steps pays the process's one-time costs (CUDA context, cuBLAS handles, bitsandbytes' library), which would
otherwise land on whichever side runs first; between runs, the previous run's memory is released so that
each run's GPU peak is its own. The header records ``autotune.device.device_info``.

    .venv/bin/python bench/bench_gpu_steps.py --device cuda [--shape smollm2] [--steps 30] [--repeats 2] [--kinds lora,qlora]
    .venv/bin/python bench/bench_gpu_steps.py --device cpu --shape tiny --steps 4 --repeats 1     # the machinery, on a CPU
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

SHAPES = {
    "smollm2": {"hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
                "intermediate_size": 1536, "vocab_size": 49152},
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
             "intermediate_size": 128, "vocab_size": 512},
}
LORA = {"r": 16, "alpha": 32, "lora_dropout": 0.05, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"], "learning_rate": 1e-3}
QLORA = {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True, "bnb_4bit_compute_dtype": "float32"}


def model_folder(shape: str) -> Path:
    """Random weights of ``shape`` with the tests' tokenizer, built once under results/bench/."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = common.RESULTS / f"random-{shape}"
    if not (folder / "model.safetensors").is_file():
        common.tiny_model()  # the tokenizer
        common.fresh(folder)
        for file in common.tiny_model().iterdir():
            if file.name.startswith(("tokenizer", "special_tokens")):
                (folder / file.name).write_bytes(file.read_bytes())
        torch.manual_seed(0)
        config = LlamaConfig(**SHAPES[shape], max_position_embeddings=2048, bos_token_id=0, eos_token_id=0, pad_token_id=0,
                             tie_word_embeddings=True)
        LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    return folder


def autotune_side(kind: str, model: Path, device: str, steps: int, work: Path) -> dict[str, Any]:
    import autotune

    cfg = common.config("tiny", common.fresh(work), **LORA, type="QLoRA" if kind == "qlora" else "LoRA", validation_size=0)
    cfg["input_model"]["model_path"] = str(model)
    cfg["passes"] = {"lora": cfg["passes"]["lora"]}
    cfg["passes"]["lora"]["training_args"].update({"max_steps": steps, "logging_steps": steps})
    cfg["engine"].update({"device": device, "evaluator": None})
    del cfg["evaluators"]
    autotune.run(cfg)
    (stats,) = (work / "cache").glob("models/*/model/train_stats.json")
    out = json.loads(stats.read_text())
    return {"steps_per_s": out["steps"] / out["train_seconds"], **{k: v for k, v in out.items() if k.startswith("gpu_")}}


def plain_side(kind: str, model: Path, device: str, steps: int, work: Path, features: list[dict[str, list[int]]]) -> dict[str, Any]:
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig, Trainer, TrainingArguments, set_seed

    from autotune.training.batches import PadToLongest

    set_seed(0)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    kwargs: dict[str, Any] = {"dtype": torch.float32, "use_safetensors": True}
    if kind == "qlora":
        kwargs["quantization_config"] = BitsAndBytesConfig(**{**QLORA, "bnb_4bit_compute_dtype": torch.float32})
        if device == "cuda":
            kwargs["device_map"] = {"": 0}
    base = AutoModelForCausalLM.from_pretrained(str(model), **kwargs)
    if kind == "qlora":
        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
    peft_model = get_peft_model(base, LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["lora_dropout"],
                                                 target_modules=LORA["target_modules"], task_type="CAUSAL_LM", bias="none"))
    bf16 = device == "cuda" and torch.cuda.is_bf16_supported()  # what autotune's auto picks
    args = TrainingArguments(output_dir=str(work / "trainer"), learning_rate=LORA["learning_rate"], max_steps=steps,
                             per_device_train_batch_size=8, seed=0, logging_steps=steps, report_to="none", save_strategy="no",
                             disable_tqdm=True, remove_unused_columns=False, use_cpu=device == "cpu", bf16=bf16,
                             logging_nan_inf_filter=False)
    result = Trainer(model=peft_model, args=args, train_dataset=features, data_collator=PadToLongest(0)).train()
    out: dict[str, Any] = {"steps_per_s": result.global_step / result.metrics["train_runtime"]}
    if device == "cuda":
        out["gpu_peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def tone_features(model: Path) -> list[dict[str, list[int]]]:
    """The training rows exactly as autotune's LoRA pass tokenises them (answer-only labels)."""
    from autotune.config_checks import load_config
    from autotune.data import load_data
    from autotune.models.loading import load_tokenizer
    from autotune.training.batches import tokenize_rows

    cfg = load_config(common.config("tiny", common.RESULTS / "gpu-steps-cfg"), base_dir=common.ROOT)
    data = load_data(cfg.data_configs[0], where="data_configs[0]")
    return tokenize_rows(load_tokenizer(model), data, data.train, "answer")


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0], repeats=2,
                             extra={"device": "cuda", "shape": "smollm2", "steps": 30, "kinds": "lora,qlora", "warmup": 5})
    from autotune.device import device_info, release_memory, resolve_device

    device = resolve_device(args.device)
    report = common.Report("bench_gpu_steps", f"{args.shape}-{device}", "LoRA/QLoRA steps/s: autotune vs plain peft + Trainer")
    report.data["device"] = device_info(device)
    report.section("Device", common.table(["key", "value"], [[k, v] for k, v in report.data["device"].items()]))
    model = model_folder(args.shape)
    features = tone_features(model)
    work = common.fresh(common.RESULTS / f"work-bench_gpu_steps-{args.shape}")
    rows = []
    for kind in args.kinds.split(","):
        runs: dict[str, list[dict[str, Any]]] = {"plain": [], "autotune": []}
        if args.warmup:
            plain_side(kind, model, device, args.warmup, common.fresh(work / f"{kind}-warmup"), features)
        for i in range(args.repeats):
            for side in (("plain", "autotune") if i % 2 == 0 else ("autotune", "plain")):
                release_memory()  # the previous run's model and optimizer state: not part of this run's peak
                began = time.perf_counter()
                if side == "plain":
                    got = plain_side(kind, model, device, args.steps, common.fresh(work / f"{kind}-plain-{i}"), features)
                else:
                    got = autotune_side(kind, model, device, args.steps, work / f"{kind}-autotune-{i}")
                got["wall_s"] = time.perf_counter() - began
                runs[side].append(got)
                print(f"{kind} {side} repeat {i}: {got}", flush=True)  # partial results survive a timeout
        report.data[kind] = runs
        rate = {side: statistics.median(r["steps_per_s"] for r in got_runs) for side, got_runs in runs.items()}
        peak = {side: max((r.get("gpu_peak_mib", 0) for r in got_runs), default=0) for side, got_runs in runs.items()}
        rows.append([kind, rate["plain"], rate["autotune"], rate["autotune"] / rate["plain"],
                     peak["plain"] or "-", peak["autotune"] or "-"])
    report.section(
        f"{args.shape} shape, batch 8, {args.steps} steps x {args.repeats} repeats (median, after {args.warmup} warm-up steps), "
        f"{len(features)} tone rows",
        common.table(["kind", "plain steps/s", "autotune steps/s", "autotune / plain (goal >= 0.95)", "plain GPU peak MiB",
                      "autotune GPU peak MiB"], rows),
    )
    report.write()


if __name__ == "__main__":
    main()
