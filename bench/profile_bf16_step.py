"""Where the Trainer's bf16 LoRA step on the CPU loses what bf16 matmuls gain (issue 22 item 3).

Found: nowhere, once each Trainer gets its own model. bench_bf16_cpu.py reused one model object across
alternating fp32/bf16 Trainers; after an fp32 Trainer has trained a model, a bf16 Trainer over the same
object runs without autocast (q_proj outputs stay fp32), so its "bf16" side was fp32.

One LoRA step of SmolLM2-135M's shape (random weights, r 16 on q/k/v/o, batch 8 x 48), profiled with
torch.profiler: transformers' Trainer with ``bf16=True`` against a plain loop with
``torch.autocast("cpu", dtype=torch.bfloat16)`` around forward and loss, each also in fp32; step times
(median of ``--steps`` after one warm-up) and the top operators by self CPU time of the bf16 sides.

    .venv/bin/python bench/profile_bf16_step.py --threads 1 --steps 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_bf16_cpu import BATCH, SHAPE, TOKENS, base_model  # noqa: E402


def lora_model() -> Any:
    from peft import LoraConfig, get_peft_model

    base, _ = base_model()
    return get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                           task_type="CAUSAL_LM"))


def batches(steps: int) -> list[dict[str, Any]]:
    import torch

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, SHAPE["vocab_size"], (steps, BATCH, TOKENS), generator=g)
    return [{"input_ids": b, "labels": b} for b in ids]


def plain_loop(model: Any, *, bf16: bool, steps: int, profile: bool) -> tuple[list[float], str]:
    import torch

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    times: list[float] = []

    def step(batch: dict[str, Any]) -> None:
        began = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - began)

    data = batches(steps + 1)
    step(data[0])
    table = ""
    if profile:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for batch in data[1:]:
                step(batch)
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14)
    else:
        for batch in data[1:]:
            step(batch)
    return times[1:], table


def trainer_steps(model: Any, *, bf16: bool, steps: int, profile: bool, work: Path) -> tuple[list[float], str]:
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    rows = [{"input_ids": ids, "labels": ids} for b in batches(steps + 1) for ids in b["input_ids"]]
    times: list[float] = []
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
    Trainer(model=model, args=args, train_dataset=rows, data_collator=collate, callbacks=[Clock()]).train()
    table = ""
    if prof is not None:
        prof.__exit__(None, None, None)
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14)
    return times[1:], table


def main() -> None:
    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as work:
        for name, run in (("plain", plain_loop), ("trainer", None)):
            for bf16 in (False, True):
                # A fresh model each side: a Trainer with bf16=True over a model that an fp32 Trainer already
                # trained does not autocast (accelerate's forward wrapping), which made bf16 look no faster.
                model = lora_model()
                if run is None:
                    times, table = trainer_steps(model, bf16=bf16, steps=args.steps, profile=bf16, work=Path(work))
                else:
                    times, table = run(model, bf16=bf16, steps=args.steps, profile=bf16)
                print(f"{name} {'bf16' if bf16 else 'fp32'}: median {statistics.median(times):.3f} s  "
                      f"({', '.join(f'{t:.2f}' for t in times)})", flush=True)
                if table:
                    print(table, flush=True)


if __name__ == "__main__":
    main()
