"""The libraries' own WARNING records through autotune's handler, each distinct message once: their loggers adopted
now, and those that install a default handler of their own when first imported (transformers, datasets, optuna,
huggingface_hub) adopted right after that import, by a finder on ``sys.meta_path`` (:class:`AdoptOnImport`): those
libraries are imported lazily, inside passes, long after logging was set up."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import sys
from types import ModuleType
from typing import Any

__all__ = ["LIBRARY_HANDLER", "LIBRARY_LOGGERS", "LIBRARY_LOGGING_MODULES", "AdoptOnImport", "ToAutotune",
           "adopt_library_logger", "route_library_logging"]

# Libraries whose WARNING records go through autotune's handler, each distinct message once.
# (onnxruntime_genai is not one: the model builder sends its records to the build's log file.)
LIBRARY_LOGGERS = ("transformers", "datasets", "peft", "onnxruntime", "optuna", "accelerate", "torch", "bitsandbytes",
                   "evaluate", "kernels", "huggingface_hub")
# Their logging modules that install a handler of their own when first imported: module -> library logger.
LIBRARY_LOGGING_MODULES = {"transformers.utils.logging": "transformers", "datasets.utils.logging": "datasets",
                           "optuna.logging": "optuna", "huggingface_hub.utils.logging": "huggingface_hub"}


class ToAutotune(logging.Handler):
    """A library's WARNING (and worse) records, each distinct message once, through autotune's console
    handler(s), named by their logger: ``transformers.trainer: ...``."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: set[tuple[str, int, str]] = set()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        key = (record.name, record.levelno, message)
        if key in self.seen:
            return
        self.seen.add(key)
        shown = logging.makeLogRecord({**record.__dict__, "msg": f"{record.name}: {message}", "args": None})
        for handler in logging.getLogger("autotune").handlers:
            if shown.levelno >= handler.level:
                handler.handle(shown)


LIBRARY_HANDLER = ToAutotune()


def adopt_library_logger(name: str) -> None:
    """Library logger ``name`` at WARNING, its records through :data:`LIBRARY_HANDLER` alone (idempotent)."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.WARNING)
    for handler in list(logger.handlers):
        if handler is not LIBRARY_HANDLER and type(handler) is logging.StreamHandler:  # a library's default handler
            logger.removeHandler(handler)
    if LIBRARY_HANDLER not in logger.handlers:
        logger.addHandler(LIBRARY_HANDLER)
    logger.propagate = False


def _adopt_after_import(module: ModuleType) -> None:
    """A library logging module that just ran: take its default handler off (it adds its own, to stderr,
    on import) and route its logger through autotune's handler instead."""
    disable = getattr(module, "disable_default_handler", None)
    if disable is not None:
        disable()
    adopt_library_logger(LIBRARY_LOGGING_MODULES[module.__name__])


class _AdoptingLoader(importlib.abc.Loader):
    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        _adopt_after_import(module)


class AdoptOnImport(importlib.abc.MetaPathFinder):
    """Runs :func:`_adopt_after_import` right after one of :data:`LIBRARY_LOGGING_MODULES` is first
    imported: those libraries are imported lazily, inside passes, long after logging was set up."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in LIBRARY_LOGGING_MODULES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None  # an unusual install: left as it is
        spec.loader = _AdoptingLoader(spec.loader)
        return spec


def route_library_logging() -> None:
    """Every library in :data:`LIBRARY_LOGGERS` logs WARNING and worse through autotune's handler, once per
    distinct message; those with a default handler of their own lose it, now or when first imported."""
    for name in LIBRARY_LOGGERS:
        adopt_library_logger(name)
    for module_name in LIBRARY_LOGGING_MODULES:
        module = sys.modules.get(module_name)
        if module is not None:
            _adopt_after_import(module)
    if not any(isinstance(finder, AdoptOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, AdoptOnImport())
