"""What a pass may use besides its input model and parameters (the run's own state is ``run_context.RunContext``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autotune.data import Dataset
from autotune.errors import TrialTimeout

__all__ = ["PassContext", "TrialTimeout"]  # TrialTimeout: re-exported (it lives in errors)

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
