"""CPU training precision chosen by measurement: a few Trainer steps of the real model, batch and LoRA
shape in fp32 and in bf16 autocast, on batches drawn as the fine-tune draws them; bf16 is taken only when it
is faster by a margin and its first-step loss matches fp32's. The decision is cached per machine (CPU model
and flags) and model, and kept with the study, so it is measured once (bench/README.md sections 6 and 13:
bf16 matmuls 4x faster did not make the Trainer's step faster)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = ["BF16_MARGIN", "LOSS_TOLERANCE", "PROBE_STEPS", "PROBE_VERSION", "ProbeDecision", "StepProbe", "cached_decision",
           "choose_precision", "decide", "machine_id", "probe_clock", "probe_file", "trainer_probe"]

log = logging.getLogger("autotune")

# Timed steps per precision, after one untimed warm-up step (allocations, first-call dispatch).
PROBE_STEPS = 3
# bf16 must be at least this much faster (fraction of the fp32 step) to be worth a different adapter.
BF16_MARGIN = 0.10
# bf16's mean probe loss must lie within this fraction of fp32's.
LOSS_TOLERANCE = 0.05

Precision = Literal["fp32", "bf16"]


@dataclass(frozen=True)
class StepProbe:
    """One precision's probe: seconds per timed step (median) and the loss of the first (untimed) step.

    The first step's loss is over the same initial weights and rows in both precisions, so its difference is the
    precision's alone; later steps' losses also carry how far the two trajectories have drifted apart (at the main
    job's learning rate 6 % after 3 steps, which kept fp32 where bf16's own error was 0.3 %)."""

    seconds: float
    loss: float


@dataclass(frozen=True)
class ProbeDecision:
    precision: Precision
    fp32_step_s: float
    bf16_step_s: float
    fp32_loss: float
    bf16_loss: float
    reason: str


def decide(fp32: StepProbe, bf16: StepProbe, *, margin: float = BF16_MARGIN, tolerance: float = LOSS_TOLERANCE) -> ProbeDecision:
    """bf16 when faster by ``margin`` and its first-step loss within ``tolerance`` of fp32's, else fp32."""
    faster = bf16.seconds <= fp32.seconds * (1 - margin)
    matches = abs(bf16.loss - fp32.loss) <= tolerance * max(abs(fp32.loss), 1e-6)
    if not matches:
        reason = f"bf16 loss {bf16.loss:.4f} differs from fp32's {fp32.loss:.4f} by more than {tolerance:.0%}"
    elif not faster:
        reason = f"bf16 step {bf16.seconds:.3f} s is not {margin:.0%} faster than fp32's {fp32.seconds:.3f} s"
    else:
        reason = f"bf16 step {bf16.seconds:.3f} s against fp32's {fp32.seconds:.3f} s at matching loss"
    return ProbeDecision("bf16" if faster and matches else "fp32", round(fp32.seconds, 4), round(bf16.seconds, 4),
                         round(fp32.loss, 5), round(bf16.loss, 5), reason)


def machine_id() -> str:
    """This CPU's model name and instruction-set flags, hashed: the decision holds for this machine class."""
    from autotune.device import cpu_flags, cpu_model

    text = cpu_model() + "|" + " ".join(sorted(cpu_flags())) + f"|{os.cpu_count()}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# 2: judged on the first step's loss, timed on randomly drawn batches (the fine-tune's row lengths); decisions of 1
# (the data's first rows, shorter than the average batch) are not reused.
PROBE_VERSION = 2


def probe_file(cache_root: Path, shape_key: str) -> Path:
    """Where the decision for this machine and model shape (model key, batch, LoRA shape) is kept."""
    return cache_root / "precision_probe" / f"{machine_id()}-{shape_key}-v{PROBE_VERSION}.json"


def cached_decision(path: Path) -> ProbeDecision | None:
    try:
        return ProbeDecision(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def choose_precision(*, cache_root: Path, shape_key: str, measure: Callable[[Precision], StepProbe],
                     shared: Any = None) -> ProbeDecision:
    """The decision for this machine and shape: the study's (``shared``: get/claim by key, e.g.
    :class:`autotune.records.StudyPrecision`), else the cached one, else a probe of both precisions (``measure``)
    cached here; a decision not from the study is offered to it, and the study's first one is used."""
    path = probe_file(cache_root, shape_key)
    if shared is not None:
        held = shared.get(path.stem)
        if held is not None:
            return ProbeDecision(**held)
    decision = _local_decision(path, measure)
    if shared is None:
        return decision
    held = ProbeDecision(**shared.claim(path.stem, asdict(decision)))
    if held != decision:
        log.info("training precision: %s (the study's decision; this machine's read %s)", held.precision, decision.precision)
    return held


def _local_decision(path: Path, measure: Callable[[Precision], StepProbe]) -> ProbeDecision:
    known = cached_decision(path)
    if known is not None:
        return known
    log.info("probing the training precision on this CPU (fp32 against bf16 autocast, %d steps each)", PROBE_STEPS)
    decision = decide(measure("fp32"), measure("bf16"))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")  # whole or absent, never half-written
    partial.write_text(json.dumps(asdict(decision), indent=2))
    try:
        # The first decision stored wins: a worker that probed alongside (under other load) takes it, so one
        # point never gets two cache keys from two readings of the same machine.
        os.link(partial, path)
    except FileExistsError:
        stored = cached_decision(path)
        if stored is not None:
            os.unlink(partial)
            log.info("training precision: %s (decided by another worker first; this probe read %s)", stored.precision,
                     decision.precision)
            return stored
        os.replace(partial, path)  # an unreadable file: this decision replaces it
    else:
        os.unlink(partial)
    log.info("training precision: %s (%s)", decision.precision, decision.reason)
    return decision


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
    from autotune.passes.lora import PadToLongest, tokenize_rows
    from autotune.passes.training_args import training_argument_values

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
