"""The CPU training-precision probe's measurement: a few Trainer steps of the real model, batch and LoRA shape in
fp32 and in bf16 autocast, on batches drawn as the fine-tune draws them (:func:`trainer_probe`). What is made of
the timings (bf16 only when faster by a margin at matching first-step loss), where the decision is kept and when a
probe runs at all: :mod:`autotune.training.precision` (bench/README.md sections 6 and 13: bf16 matmuls 4x faster
did not make the Trainer's step faster)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autotune.training.precision import PROBE_STEPS, Precision, StepProbe

__all__ = ["probe_clock", "trainer_probe"]


def probe_clock(precision: Precision) -> Callable[[], float]:
    """The clock that times ``precision``'s probe steps (tests replace it to inject a faster precision)."""
    return time.perf_counter


def trainer_probe(*, model_path: Path, params: Any, data: Any, trust_remote_code: bool, work_dir: Path,
                  precision: Precision, steps: int = PROBE_STEPS) -> StepProbe:
    """``steps`` timed Trainer steps (after one warm-up) of the fine-tune's own model, LoRA shape, batch and rows."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainerCallback, TrainingArguments, set_seed

    from autotune.models.loading import load_causal_lm, load_tokenizer
    from autotune.training.arguments import training_argument_values
    from autotune.training.batches import PadToLongest, tokenize_rows

    set_seed(params.training_args.seed)
    tokenizer = load_tokenizer(model_path, trust_remote_code=trust_remote_code)
    base = load_causal_lm(model_path, trust_remote_code=trust_remote_code)
    model = get_peft_model(base, LoraConfig(r=params.r, lora_alpha=params.effective_alpha, lora_dropout=params.lora_dropout,
                                            target_modules=params.target_modules, task_type="CAUSAL_LM", bias="none"))
    loss_on = params.loss_on or ("answer" if data.is_classification else "all")
    batch = params.training_args.per_device_train_batch_size or 8
    # Rows drawn at random, as the Trainer's sampler draws them: a batch is padded to its longest row, so the data's
    # first rows (here 28 tokens at most per batch of 8, against 39 on average for random batches) time a shorter step.
    draw = random.Random(params.training_args.seed)
    rows = [data.train[draw.randrange(len(data.train))] for _ in range(batch * (steps + 1))]
    values = training_argument_values(params.training_args, work_dir, learning_rate=params.learning_rate, origin="probe",
                                      device="cpu", precision=precision)
    values.update(max_steps=steps + 1, logging_steps=1, eval_strategy="no", gradient_accumulation_steps=1,
                  per_device_train_batch_size=batch)
    clock = probe_clock(precision)
    times: list[float] = []
    losses: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *_: Any, **__: Any) -> None:
            times.append(-clock())

        def on_step_end(self, *_: Any, **__: Any) -> None:
            times[-1] += clock()

        def on_log(self, _args: Any, _state: Any, _control: Any, logs: dict[str, float] | None = None, **_: Any) -> None:
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    trainer = Trainer(model=model, args=TrainingArguments(**values), train_dataset=tokenize_rows(tokenizer, data, rows, loss_on),
                      data_collator=PadToLongest(tokenizer.pad_token_id), callbacks=[Clock()])
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    with torch.random.fork_rng():
        trainer.train()
    timed = sorted(times[1:]) or times
    return StepProbe(seconds=timed[len(timed) // 2], loss=losses[0] if losses else float("nan"))
