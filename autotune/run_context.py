"""The run context: one run's shared state (the config, the cache, the pipeline over it, the evaluator),
built once and passed explicitly (no global state). The composition root: it sits above the pipeline
and the evaluator it builds, below the search and the commands that take it."""

from __future__ import annotations

import os
from pathlib import Path

from autotune.artifacts import open_store
from autotune.cache import Cache
from autotune.config.schema import EngineConfig, RunConfig
from autotune.evaluation.runner import ModelEvaluator
from autotune.pipeline import Pipeline, PipelineObserver

__all__ = ["RunContext"]


class RunContext:
    """One run's shared state, built once: the config, the cache (the only ``Cache`` of the run), the
    pipeline over it and the evaluator. Commands and the study take it instead of building their own."""

    def __init__(self, config: RunConfig, *, observer: PipelineObserver | None = None,
                 cache: Cache | None = None) -> None:
        self.config = config
        self.observer = observer
        self.cache = cache if cache is not None else self._cache(config.engine)
        self._pipeline: Pipeline | None = None

    @staticmethod
    def _cache(engine: EngineConfig) -> Cache:
        """This machine's cache, reading through ``engine.artifact_store`` when one is set (checked
        reachable here: a one-line error before any work). ``AUTOTUNE_CACHE_DIR`` names this machine's
        cache folder when the study's stored ``cache_dir`` is another machine's path (``select`` elsewhere)."""
        root = Path(os.environ["AUTOTUNE_CACHE_DIR"]) if os.environ.get("AUTOTUNE_CACHE_DIR") else engine.cache_dir
        store = open_store(engine.artifact_store) if engine.artifact_store else None
        return Cache(root, store, heartbeat=engine.heartbeat_seconds)

    @property
    def pipeline(self) -> Pipeline:
        if self._pipeline is None:
            self._pipeline = Pipeline(self.config, cache=self.cache, observer=self.observer)
        return self._pipeline

    def evaluator(self, name: str | None = None, *, use_cache: bool = True) -> ModelEvaluator:
        """The config's evaluator (``engine.evaluator`` unless ``name``), reading data through the pipeline."""
        return ModelEvaluator(self.config, cache=self.cache, data_loader=self.pipeline.data, evaluator_name=name,
                              use_cache=use_cache)

    def preflight(self) -> None:
        """Read every input the run needs (the evaluator's data included) before anything is written."""
        from autotune.config_checks import check_metric_inputs

        names: list[str] = []
        if self.config.engine.evaluator and self.config.engine.evaluator in self.config.evaluators:
            names = self.evaluator().data_names()
            check_metric_inputs(self.config, only=self.config.engine.evaluator)
        self.pipeline.preflight(names)
