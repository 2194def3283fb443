"""What a pass may use besides its input model and parameters (the run's own state is ``run_context.RunContext``):
while it runs (:class:`PassContext`), and while the chain's cache keys are computed (:class:`KeyContext`, the
argument of ``Pass.cache_context``, which answers with a :class:`StepContext`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autotune.data import Dataset
from autotune.errors import TrialTimeout
from autotune.models.handle import ModelHandle

__all__ = ["KeyContext", "PassContext", "StepContext", "TrialTimeout"]  # TrialTimeout: re-exported (it lives in errors)

log = logging.getLogger("autotune")


@dataclass
class PassContext:
    """What a pass may use besides its input model and parameters."""

    provider: str
    work_dir: Path
    data: Dataset | None = None
    trust_remote_code: bool = False
    # Called by training passes with (step, eval_loss); may raise to stop a hopeless trial.
    report_intermediate: Callable[[int, float], None] | None = None
    progress: Any = None
    # The config path of the pass (e.g. "passes.lora"), for one-line errors naming the key.
    origin: str = "passes"
    # Where a training pass trains ("cpu" | "cuda"; "cpu" for the passes whose output does not depend on it).
    device: str = "cpu"
    # The training precision decided for the run (the study's probe decision; None: training_args or the device
    # decide), and the probe's step timings, which train_stats.json records.
    precision: str | None = None
    precision_probe: dict[str, float] = field(default_factory=dict)
    # time.monotonic() after which long-running passes stop (the trial's trial_timeout).
    deadline: float | None = None

    def check_deadline(self, where: str) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise TrialTimeout(f"trial_timeout exceeded {where}")


@dataclass
class KeyContext:
    """What of the run a pass's ``cache_context`` may read while the chain's keys are computed, before any pass
    runs. The device and the data are read on first use: resolving ``engine.device`` may import torch."""

    parent: str  # the key of the step's input model (the chain so far)
    input_model: ModelHandle  # the base model the chain starts from
    cache_root: Path
    scratch: Path  # where work folders go (the cache's tmp/); one made here is removed here
    read_device: Callable[[], str]  # ``engine.device`` resolved
    read_data: Callable[[], Dataset] | None = None  # the step's data config; None: it names none
    trust_remote_code: bool = False
    # The study's training-precision decisions (autotune.records.StudyPrecision), when a study runs the pipeline.
    shared_precision: Any = None

    @property
    def device(self) -> str:
        return self.read_device()

    @property
    def data(self) -> Dataset | None:
        return self.read_data() if self.read_data is not None else None


@dataclass(frozen=True)
class StepContext:
    """What a pass's ``cache_context`` decided of the run for one step: ``key`` enters its cache key (as its
    ``runtime`` entry, when not empty), ``run`` holds the :class:`PassContext` fields it then runs with (by name:
    the training precision measured on this CPU and the probe's timings)."""

    key: dict[str, Any]
    run: dict[str, Any] = field(default_factory=dict)
