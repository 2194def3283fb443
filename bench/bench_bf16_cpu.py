"""bf16 autocast against fp32 for a LoRA fine-tune on the CPU (issue 12 item 2, issue 15 item 5).

Three measurements, side by side in one run (other load on the machine affects both sides alike):

1. Step time: a LoRA step of SmolLM2-135M's shape (the real weights when the demo model is converted,
   else random weights of its shape), batch 8 x 48 tokens, through transformers' Trainer with
   ``use_cpu=True`` and ``bf16=False`` / ``bf16=True`` (CPU autocast). The two sides alternate in
   rounds; the first step of each Trainer (warm-up) is dropped.
2. Compute bound: the step's matmul FLOPs (forward, and the backward's input gradients: the base is
   frozen) timed as bare ``torch.mm`` calls of the same shapes in fp32 and in bf16; the step time
   over that bound says how much of the step is not matmul work.
3. Accuracy: the main job's fine-tune (r 16 on q/k/v/o, 60 steps of batch 8, lr 1e-3) through
   autotune's own LoRA -> merge, then label-scoring accuracy on the 160 held-out rows, fp32 and bf16.

    .venv/bin/python bench/bench_bf16_cpu.py [--steps 3] [--rounds 2] [--accuracy-steps 60] [--no-accuracy 1] [--no-timing 1] [--threads 1]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

SHAPE = {"hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
         "intermediate_size": 1536, "vocab_size": 49152, "tie_word_embeddings": True}
BATCH, TOKENS = 8, 48


def smollm2_folder() -> Path | None:
    """The converted demo model if the bench has it already (converting is not part of this bench)."""
    root = common.RESULTS / "smollm2-import" / "models"
    found = sorted(root.glob("*/model/config.json")) if root.is_dir() else []
    return found[0].parent if found else None


def base_model() -> tuple[Any, str]:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    folder = smollm2_folder()
    if folder is not None:
        return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32, use_safetensors=True), f"SmolLM2-135M ({folder})"
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**SHAPE)), "random weights of SmolLM2-135M's shape"


def time_steps(model: Any, *, bf16: bool, steps: int, work: Path) -> list[float]:
    """Seconds of each optimizer step after the first, for one Trainer over fixed 8 x 48 batches."""
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    g = torch.Generator().manual_seed(0)
    rows = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, SHAPE["vocab_size"], (BATCH * (steps + 1), TOKENS), generator=g)]
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *_: Any, **__: Any) -> None:
            self.began = time.perf_counter()

        def on_step_end(self, *_: Any, **__: Any) -> None:
            times.append(time.perf_counter() - self.began)

    args = TrainingArguments(output_dir=str(work), use_cpu=True, bf16=bf16, max_steps=steps + 1, per_device_train_batch_size=BATCH,
                             learning_rate=1e-4, report_to="none", save_strategy="no", disable_tqdm=True, logging_strategy="no",
                             remove_unused_columns=False, train_sampling_strategy="sequential")
    collate = lambda batch: {k: torch.stack([b[k] for b in batch]) for k in batch[0]}  # noqa: E731
    Trainer(model=model, args=args, train_dataset=rows, data_collator=collate, callbacks=[Clock()]).train()
    return times[1:]


def lora_step_times(steps: int, rounds: int, work: Path) -> tuple[dict[str, list[float]], Any, str]:
    from peft import LoraConfig, get_peft_model

    base, source = base_model()
    model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                            task_type="CAUSAL_LM"))
    out: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for _ in range(rounds):  # alternate the two sides so drifting load hits both
        for name in out:
            out[name] += time_steps(model, bf16=name == "bf16", steps=steps, work=work)
    return out, model, source


def matmul_bound(model: Any) -> dict[str, Any]:
    """FLOPs of the step's matmuls, and their time as bare torch.mm calls in fp32 and bf16."""
    import torch

    tokens = BATCH * TOKENS
    shapes: dict[tuple[int, int], int] = {}
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module.weight.numel() > 64 * 64:  # base layers, not LoRA's r-wide factors
            key = (module.in_features, module.out_features)
            shapes[key] = shapes.get(key, 0) + 1
    flops = sum(count * 2 * 2 * tokens * i * o for (i, o), count in shapes.items())  # forward + input gradient
    result: dict[str, Any] = {"step_matmul_gflop": flops / 1e9, "linear_shapes": {f"{i}x{o}": n for (i, o), n in shapes.items()}}
    for dtype in (torch.float32, torch.bfloat16):
        total = 0.0
        for (i, o), count in shapes.items():
            x, w, gy = torch.randn(tokens, i, dtype=dtype), torch.randn(o, i, dtype=dtype), torch.randn(tokens, o, dtype=dtype)
            for _ in range(2):  # warm-up
                x @ w.t()
            reps = []
            for _ in range(7):
                began = time.perf_counter()
                x @ w.t()
                gy @ w  # the backward's gradient with respect to the input
                reps.append(time.perf_counter() - began)
            total += count * min(reps)  # a bound: the best throughput seen (load from other processes only slows it)
        name = str(dtype).removeprefix("torch.")
        result[f"bound_s_{name}"] = total
        result[f"gflops_{name}"] = flops / total / 1e9
    return result


def accuracy_runs(steps: int, work: Path) -> dict[str, dict[str, Any]]:
    """The main job's fine-tune in fp32 and in bf16 through autotune (LoRA -> merge), accuracy on the held-out rows."""
    import autotune

    evaluator = {"metrics": [{"name": "accuracy", "type": "accuracy", "sub_types": [{"name": "accuracy", "priority": 1}],
                              "user_config": {"mode": "label_scoring", "perplexity": False}}]}
    out: dict[str, dict[str, Any]] = {}
    for name in ("fp32", "bf16"):
        cfg = common.config("smollm2", common.fresh(work / name), evaluator=evaluator, r=16, alpha=32,
                            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], learning_rate=1e-3)
        cfg["data_configs"][0]["eval_dataset_size"] = 160
        cfg["passes"]["lora"]["training_args"].update({"max_steps": steps, "bf16": name == "bf16"})
        del cfg["passes"]["build"]
        began = time.perf_counter()
        result = autotune.run(cfg)
        seconds = {p.name: p.seconds for p in result.record.passes}
        metric = result.record.metrics["accuracy-accuracy"].model_dump()
        out[name] = {"lora_s": seconds["lora"], "run_s": time.perf_counter() - began, "accuracy": metric["value"],
                     "interval": metric.get("interval"), "n": metric.get("n")}
    return out


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0], extra={"steps": 3, "rounds": 2, "accuracy-steps": 60,
                                                                          "no-accuracy": 0, "no-timing": 0, "threads": 0})

    import torch

    from autotune.device import device_info

    if args.threads:  # 1 thread: robust when other processes share the cores (no OpenMP barrier waits)
        torch.set_num_threads(args.threads)

    report = common.Report("bench_bf16_cpu", "smollm2", "bf16 autocast vs fp32, LoRA on the CPU")
    info = device_info("cpu")
    report.data["device"] = info
    report.section("Device", common.table(["key", "value"], [[k, v] for k, v in info.items()]))
    work = common.fresh(common.RESULTS / "bf16-work")
    if not args.no_timing:
        timing_sections(report, args, work)
    if not args.no_accuracy:
        acc = accuracy_runs(args.accuracy_steps, work / "accuracy")
        report.data["accuracy"] = acc
        report.section(
            f"Accuracy: the main job's fine-tune ({args.accuracy_steps} steps) -> merge, label scoring on 160 held-out rows",
            common.table(["precision", "LoRA pass s", "accuracy", "95% interval"],
                         [[k, v["lora_s"], v["accuracy"], str(v["interval"])] for k, v in acc.items()]),
        )
    report.write()


def timing_sections(report: common.Report, args: Any, work: Path) -> None:
    import torch

    times, model, source = lora_step_times(args.steps, args.rounds, work / "trainer")
    med = {k: statistics.median(v) for k, v in times.items()}
    bound = matmul_bound(model)
    report.data.update({"model_source": source, "step_seconds": times, "bound": bound})
    rows = []
    for name in ("fp32", "bf16"):
        b = bound[f"bound_s_{'float32' if name == 'fp32' else 'bfloat16'}"]
        rows.append([name, common.stats(times[name]), b, med[name] / b, bound[f"gflops_{'float32' if name == 'fp32' else 'bfloat16'}"]])
    report.section(
        f"LoRA step, batch {BATCH} x {TOKENS} tokens ({source}; r 16 on q/k/v/o; {torch.get_num_threads()} threads)",
        common.table(["precision", "step s (median, min–max)", "matmul bound s", "step / bound", "matmul GFLOP/s"], rows)
        + f"\n\nbf16 / fp32 step time: {med['bf16'] / med['fp32']:.2f}. Step matmul work: {bound['step_matmul_gflop']:.1f} GFLOP "
        "(forward + input gradients of the frozen base; LoRA's own matmuls are negligible).",
    )


if __name__ == "__main__":
    main()
