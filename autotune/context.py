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
    extras: dict[str, Any] = field(default_factory=dict)
    # time.monotonic() after which long-running passes stop (the trial's trial_timeout).
    deadline: float | None = None

    def check_deadline(self, where: str) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise TrialTimeout(f"trial_timeout exceeded {where}")
