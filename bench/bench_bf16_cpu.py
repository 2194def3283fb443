"""bf16 autocast against fp32 for a LoRA fine-tune on the CPU (issue 12 item 2, issue 15 item 5).

Three measurements, side by side in one run (other load on the machine affects both sides alike):

1. Step time: a LoRA step of SmolLM2-135M's shape (the real weights when the demo model is converted,
   else random weights of its shape; ``--model tiny``: the tests' tiny Llama), batch 8 x 48 tokens,
   through transformers' Trainer with ``use_cpu=True`` and ``bf16=False`` / ``bf16=True`` (CPU
   autocast). The two sides alternate in rounds, each Trainer over a fresh model (a bf16 Trainer over a
   model an fp32 Trainer trained runs fp32); the first step of each Trainer (warm-up) is dropped, and
   the dtype of a q_proj's output in each side's last step shows whether it ran under autocast.
2. Compute bound: the step's matmul FLOPs (forward, and the backward's input gradients: the base is
   frozen) timed as bare ``torch.mm`` calls of the same shapes in fp32 and in bf16; the step time
   over that bound says how much of the step is not matmul work.
3. Accuracy: the main job's fine-tune (r 16 on q/k/v/o, 60 steps of batch 8, lr 1e-3) through
   autotune's own LoRA -> merge, then label-scoring accuracy on the 160 held-out rows, fp32 and bf16.

    .venv/bin/python bench/bench_bf16_cpu.py [--model smollm2|tiny] [--steps 3] [--rounds 2] [--accuracy-steps 60] [--no-accuracy 1]
                                             [--no-timing 1] [--threads 1]
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


def base_model(model: str = "smollm2") -> tuple[Any, str]:
    """A fresh float32 base model and what it is: the tests' tiny Llama, or SmolLM2-135M (its real weights when
    converted, else random weights of its shape)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    if model == "tiny":
        return AutoModelForCausalLM.from_pretrained(str(common.tiny_model()), dtype=torch.float32), "the tests' tiny Llama"
    folder = smollm2_folder()
    if folder is not None:
        return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32, use_safetensors=True), f"SmolLM2-135M ({folder})"
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**SHAPE)), "random weights of SmolLM2-135M's shape"


def lora_model(model: str = "smollm2") -> tuple[Any, str]:
    """A fresh peft model (r 16 on q/k/v/o) over a fresh base. Each Trainer needs its own: a ``bf16=True`` Trainer
    over a model that an fp32 Trainer already trained does not autocast (accelerate's forward wrapping), so its
    "bf16" side would run fp32."""
    from peft import LoraConfig, get_peft_model

    base, source = base_model(model)
    return get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                           task_type="CAUSAL_LM")), source


def batches(steps: int, vocab_size: int = SHAPE["vocab_size"]) -> list[dict[str, Any]]:
    """``steps`` fixed random batches of BATCH x TOKENS token ids (labels = inputs)."""
    import torch

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab_size, (steps, BATCH, TOKENS), generator=g)
    return [{"input_ids": b, "labels": b} for b in ids]


def trainer_steps(model: Any, *, bf16: bool, steps: int, work: Path, profile: bool = False) -> tuple[list[float], str, str]:
    """One Trainer (``use_cpu=True``, ``bf16``) over ``steps`` + 1 fixed batches: the seconds of each optimizer step
    after the first (warm-up), torch.profiler's top operators of those steps (``profile``, else ""), and the dtype
    of the first q_proj's output in the last step (bfloat16 when the step ran under autocast)."""
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    rows = [{"input_ids": ids, "labels": ids} for b in batches(steps + 1, model.config.vocab_size) for ids in b["input_ids"]]
    times: list[float] = []
    seen: list[str] = []
    q_proj = next(m for name, m in model.named_modules() if name.endswith("q_proj.base_layer"))
    hook = q_proj.register_forward_hook(lambda _m, _i, out: seen.append(str(out.dtype).removeprefix("torch.")))
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) if profile else None

    class Clock(TrainerCallback):
        def on_step_begin(self, _args: Any, state: Any, *_: Any, **__: Any) -> None:
            if prof is not None and state.global_step == 1:
                prof.__enter__()
            self.began = time.perf_counter()

        def on_step_end(self, *_: Any, **__: Any) -> None:
            times.append(time.perf_counter() - self.began)

    args = TrainingArguments(output_dir=str(work), use_cpu=True, bf16=bf16, max_steps=steps + 1, per_device_train_batch_size=BATCH,
                             learning_rate=1e-4, report_to="none", save_strategy="no", disable_tqdm=True, logging_strategy="no",
                             remove_unused_columns=False, train_sampling_strategy="sequential")
    collate = lambda batch: {k: torch.stack([b[k] for b in batch]) for k in batch[0]}  # noqa: E731
    try:
        Trainer(model=model, args=args, train_dataset=rows, data_collator=collate, callbacks=[Clock()]).train()
    finally:
        hook.remove()
    table = ""
    if prof is not None:
        prof.__exit__(None, None, None)
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14)
    return times[1:], table, seen[-1] if seen else "none"


def lora_step_times(steps: int, rounds: int, work: Path,
                    model: str = "smollm2") -> tuple[dict[str, list[float]], dict[str, str], Any, str]:
    """Step seconds per side, the q_proj output dtype each side ran at, the last model and its source."""
    out: dict[str, list[float]] = {"fp32": [], "bf16": []}
    dtypes: dict[str, str] = {}
    peft_model, source = None, ""
    for _ in range(rounds):  # alternate the two sides so drifting load hits both
        for name in out:
            peft_model, source = lora_model(model)  # a fresh model per Trainer (see lora_model)
            times, _, dtypes[name] = trainer_steps(peft_model, bf16=name == "bf16", steps=steps, work=work)
            out[name] += times
    return out, dtypes, peft_model, source


def matmul_bound(model: Any) -> dict[str, Any]:
    """FLOPs of the step's matmuls, and their time as bare torch.mm calls in fp32 and bf16."""
    import torch

    tokens = BATCH * TOKENS
    shapes: dict[tuple[int, int], int] = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and "lora_" not in name:  # base layers, not LoRA's r-wide factors
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


def accuracy_runs(steps: int, work: Path, model: str = "smollm2") -> dict[str, dict[str, Any]]:
    """The main job's fine-tune in fp32 and in bf16 through autotune (LoRA -> merge), accuracy on the held-out rows."""
    import autotune

    evaluator = {"metrics": [{"name": "accuracy", "type": "accuracy", "sub_types": [{"name": "accuracy", "priority": 1}],
                              "user_config": {"mode": "label_scoring", "perplexity": False}}]}
    out: dict[str, dict[str, Any]] = {}
    for name in ("fp32", "bf16"):
        cfg = common.config(model, common.fresh(work / name), evaluator=evaluator, r=16, alpha=32,
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
    args = common.parse_args(__doc__.splitlines()[0], model="smollm2", extra={"steps": 3, "rounds": 2, "accuracy-steps": 60,
                                                                               "no-accuracy": 0, "no-timing": 0, "threads": 0})

    import torch

    from autotune.device import device_info

    if args.threads:  # 1 thread: robust when other processes share the cores (no OpenMP barrier waits)
        torch.set_num_threads(args.threads)

    report = common.Report("bench_bf16_cpu", args.model, "bf16 autocast vs fp32, LoRA on the CPU")
    info = device_info("cpu")
    report.data["device"] = info
    report.section("Device", common.table(["key", "value"], [[k, v] for k, v in info.items()]))
    work = common.fresh(common.RESULTS / "bf16-work")
    if not args.no_timing:
        timing_sections(report, args, work)
    if not args.no_accuracy:
        acc = accuracy_runs(args.accuracy_steps, work / "accuracy", args.model)
        report.data["accuracy"] = acc
        report.section(
            f"Accuracy: the main job's fine-tune ({args.accuracy_steps} steps) -> merge, label scoring on 160 held-out rows",
            common.table(["precision", "LoRA pass s", "accuracy", "95% interval"],
                         [[k, v["lora_s"], v["accuracy"], str(v["interval"])] for k, v in acc.items()]),
        )
    report.write()


def timing_sections(report: common.Report, args: Any, work: Path) -> None:
    import torch

    times, dtypes, model, source = lora_step_times(args.steps, args.rounds, work / "trainer", args.model)
    med = {k: statistics.median(v) for k, v in times.items()}
    bound = matmul_bound(model)
    report.data.update({"model_source": source, "step_seconds": times, "q_proj_output_dtype": dtypes, "bound": bound})
    rows = []
    for name in ("fp32", "bf16"):
        b = bound[f"bound_s_{'float32' if name == 'fp32' else 'bfloat16'}"]
        rows.append([name, dtypes[name], common.stats(times[name]), b, med[name] / b,
                     bound[f"gflops_{'float32' if name == 'fp32' else 'bfloat16'}"]])
    report.section(
        f"LoRA step, batch {BATCH} x {TOKENS} tokens ({source}; r 16 on q/k/v/o; {torch.get_num_threads()} threads)",
        common.table(["precision", "q_proj output dtype", "step s (median, min–max)", "matmul bound s", "step / bound",
                      "matmul GFLOP/s"], rows)
        + f"\n\nbf16 / fp32 step time: {med['bf16'] / med['fp32']:.2f}. Step matmul work: {bound['step_matmul_gflop']:.1f} GFLOP "
        "(forward + input gradients of the frozen base; LoRA's own matmuls are negligible).",
    )


if __name__ == "__main__":
    main()
