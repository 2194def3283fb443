"""Which precision a fine-tune trains in, decided here and nowhere else.

``training_args.precision`` (:data:`PRECISIONS`) forces one, read as transformers' ``bf16``/``fp16`` flags
(:class:`autotune.training.arguments.TrainingArgs`); left at ``auto``, :func:`mixed_precision` takes bf16 where a
GPU has it and fp32 on the CPU, unless the CPU probe decides otherwise. The probe applies to a fine-tune of the input
model on a CPU with bf16 instructions (:func:`probed_decision`): a few Trainer steps in each precision
(:mod:`autotune.training.precision_probe` measures them), bf16 taken only when it is faster by a margin and its
first-step loss matches fp32's (:func:`decide`). The decision is cached per machine (CPU model and flags) and model
shape, and kept with the study, so it is measured once (:func:`choose_precision`). Whether the hardware has bf16 is
a device fact (:func:`autotune.device.bf16_supported`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from autotune.context import KeyContext

__all__ = ["BF16_MARGIN", "CPU_BF16_BY_DEFAULT", "LOSS_TOLERANCE", "PRECISIONS", "PROBE_STEPS", "PROBE_VERSION", "ProbeDecision",
           "StepProbe", "cached_decision", "choose_precision", "decide", "machine_id", "mixed_precision", "probe_fields",
           "probe_file", "probed_decision"]

log = logging.getLogger("autotune")

# training_args.precision: auto (the default: measured on a CPU with bf16 instructions, bf16 where a GPU has it),
# or one forced for every fine-tune of the config (read as transformers' bf16/fp16 flags, see TrainingArgs).
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def mixed_precision(args: Any, device: str) -> Literal["fp32", "bf16", "fp16"]:
    """The precision ``args`` (a :class:`autotune.training.arguments.TrainingArgs`) train in without a probe's
    decision: transformers' own ``bf16``/``fp16`` when set; unset (auto): bf16 where the hardware has it and
    it pays (GPUs that support it; the CPU only where measured faster at equal accuracy), else fp32."""
    bf16, fp16 = getattr(args, "bf16", None), getattr(args, "fp16", None)
    if bf16:
        return "bf16"
    if fp16:
        return "fp16"
    if bf16 is False:
        return "fp32"
    from autotune.device import bf16_supported

    if device == "cuda":
        return "bf16" if bf16_supported("cuda") else "fp32"
    return "bf16" if CPU_BF16_BY_DEFAULT and bf16_supported("cpu") else "fp32"


# bench/bench_bf16_cpu.py decides this: bf16 autocast on an AVX512-BF16/AMX CPU (see bench/README.md).
CPU_BF16_BY_DEFAULT = False


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


def probed_decision(params: Any, ctx: KeyContext, *, trainer_probe: Callable[..., StepProbe]) -> ProbeDecision | None:
    """The CPU precision probe's decision for a fine-tune (``params``: LoRA's) of the input model with
    ``training_args.bf16`` unset on a CPU with bf16 instructions (cached per machine and shape); None where it does
    not apply. ``trainer_probe``: the measurement (:func:`autotune.training.precision_probe.trainer_probe`)."""
    if ctx.device != "cpu":
        return None
    if getattr(params.training_args, "bf16", None) is not None or getattr(params.training_args, "fp16", None):
        return None  # forced by the user
    if os.environ.get("AUTOTUNE_PRECISION_PROBE", "").lower() in ("0", "off", "false"):
        return None  # turned off for this process and its children (the test suite does: machine-independent keys)
    from autotune.device import bf16_supported

    if not bf16_supported("cpu") or ctx.parent != ctx.input_model.key or ctx.read_data is None:
        return None  # no bf16 instructions, or a base that does not exist yet: fp32
    from autotune.cache import hash_key
    from autotune.device import release_memory

    model, data = ctx.input_model, ctx.data
    args = params.training_args
    # One decision per model, batch and sequence length on this machine, whatever the LoRA rank and targets: a
    # probe per LoRA shape let timing noise train one study's fine-tunes at different precisions.
    shape = hash_key({"model": ctx.parent, "batch": args.per_device_train_batch_size, "max_len": data.source_max_len,
                      "checkpointing": args.gradient_checkpointing})
    work = ctx.scratch / f"probe-{os.getpid()}.{uuid.uuid4().hex[:12]}"

    def measure(precision: Any) -> Any:
        try:
            return trainer_probe(model_path=model.path, params=params, data=data, work_dir=work, precision=precision,
                                 trust_remote_code=ctx.trust_remote_code)
        finally:
            shutil.rmtree(work, ignore_errors=True)
            release_memory()

    return choose_precision(cache_root=ctx.cache_root, shape_key=shape, measure=measure, shared=ctx.shared_precision)


def probe_fields(probe: ProbeDecision | None) -> dict[str, Any]:
    """The pass context's view of a precision probe: the precision it trains in, and the timings for train_stats."""
    if probe is None:
        return {}
    return {"precision": probe.precision, "precision_probe": {"probe_fp32_step_s": probe.fp32_step_s,
                                                             "probe_bf16_step_s": probe.bf16_step_s}}
