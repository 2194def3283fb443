"""Where the Trainer's bf16 LoRA step on the CPU loses what bf16 matmuls gain (issue 22 item 3).

Found: nowhere, once each Trainer gets its own model. bench_bf16_cpu.py used to reuse one model object
across alternating fp32/bf16 Trainers; after an fp32 Trainer has trained a model, a bf16 Trainer over the
same object runs without autocast (q_proj outputs stay fp32), so its "bf16" side was fp32 (fixed there
since: a fresh model per Trainer). The Trainer side is bench_bf16_cpu.py's own (:func:`trainer_steps`).

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

from bench_bf16_cpu import batches, lora_model, trainer_steps  # noqa: E402


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
                model, _ = lora_model()
                if run is None:
                    times, table, _ = trainer_steps(model, bf16=bf16, steps=args.steps, profile=bf16, work=Path(work))
                else:
                    times, table = run(model, bf16=bf16, steps=args.steps, profile=bf16)
                print(f"{name} {'bf16' if bf16 else 'fp32'}: median {statistics.median(times):.3f} s  "
                      f"({', '.join(f'{t:.2f}' for t in times)})", flush=True)
                if table:
                    print(table, flush=True)


if __name__ == "__main__":
    main()
