"""The run context: paths, provider, logger and progress, passed explicitly (no global state)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autotune.data import Dataset
from autotune.errors import TrialTimeout

__all__ = ["PassContext", "RunContext", "TrialTimeout"]  # TrialTimeout: re-exported (it lives in errors)

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


class RunContext:
    """One run's shared state, built once: the config, the cache (the only ``Cache`` of the run), the
    pipeline over it and the evaluator. Commands and the study take it instead of building their own."""

    def __init__(self, config: Any, *, observer: Any = None, cache: Any = None) -> None:
        self.config = config
        self.observer = observer
        self.cache = cache if cache is not None else self._cache(config.engine)
        self._pipeline: Any = None

    @staticmethod
    def _cache(engine: Any) -> Any:
        """This machine's cache, reading through ``engine.artifact_store`` when one is set (checked
        reachable here: a one-line error before any work). ``AUTOTUNE_CACHE_DIR`` names this machine's
        cache folder when the study's stored ``cache_dir`` is another machine's path (``select`` elsewhere)."""
        import os

        from autotune.artifacts import open_store
        from autotune.cache import Cache

        root = Path(os.environ["AUTOTUNE_CACHE_DIR"]) if os.environ.get("AUTOTUNE_CACHE_DIR") else engine.cache_dir
        store = open_store(engine.artifact_store) if engine.artifact_store else None
        return Cache(root, store, heartbeat=engine.heartbeat_seconds)

    @property
    def pipeline(self) -> Any:
        if self._pipeline is None:
            from autotune.pipeline import Pipeline

            self._pipeline = Pipeline(self.config, cache=self.cache, observer=self.observer)
        return self._pipeline

    def evaluator(self, name: str | None = None, *, use_cache: bool = True) -> Any:
        """The config's evaluator (``engine.evaluator`` unless ``name``), reading data through the pipeline."""
        from autotune.evaluation.runner import ModelEvaluator

        return ModelEvaluator(self.config, cache=self.cache, data_loader=self.pipeline.data, evaluator_name=name,
                              use_cache=use_cache)

    def preflight(self) -> None:
        """Read every input the run needs (the evaluator's data included) before anything is written."""
        names: list[str] = []
        if self.config.engine.evaluator and self.config.engine.evaluator in self.config.evaluators:
            names = self.evaluator().data_names()
        self.pipeline.preflight(names)
