"""Console logging (rich), the offline switches set before any HF library is imported, and the few
library messages that are known noise (filtered one by one: every other warning still shows).

The libraries' own WARNING records go through autotune's handler, each distinct message once
(:func:`route_library_logging`). Where autotune must quiet a library for one call, it does so at that
library's logger and undoes it afterwards (:func:`library_level`, :func:`dropped_messages`,
:func:`ignored_warning`, :func:`quiet_quantizers`): never ``logging.disable``, a swapped ``sys.stdout``
or a replaced warning-filter list, which would silence every other thread of the process too."""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import logging
import os
import sys
import warnings
from collections.abc import Iterable, Iterator
from types import ModuleType
from typing import Any, TextIO

# re-exported: the scoped warning filter lives in a leaf module, for autotune.device's use too
from autotune.warning_filters import ignored_warning as ignored_warning

OLIVE_SEVERITY = {0: logging.DEBUG, 1: logging.INFO, 2: logging.WARNING, 3: logging.ERROR, 4: logging.CRITICAL}


def go_offline() -> None:
    """The libraries autotune drives stay off the network; no telemetry.

    transformers, peft, datasets and kernels only ever get local folders and files, so HF_HUB_OFFLINE=1
    keeps them from reaching the Hub on their own (hub kernels, update checks). The user's own choice
    is recorded first (child processes inherit it): it decides whether autotune's one Hub access, the
    download of an input model id absent from the cache (autotune.models.hub), may happen.
    """
    from autotune.models.hub import USER_OFFLINE_MARK, hub_offline

    os.environ.setdefault(USER_OFFLINE_MARK, "1" if hub_offline() else "0")
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(name, "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")


# Python warnings that say nothing the user can act on: (category, message regex at its start, module regex).
KNOWN_WARNINGS: tuple[tuple[type[Warning], str, str], ...] = (
    # transformers 5.x renamed the PyTorch cache argument; the PyTorch backend of the evaluators passes
    # it by the old name, which every supported transformers version still accepts.
    (FutureWarning, r"`past_key_values` is deprecated and will be removed", ""),
    # peft and the Trainer call this renamed transformers property themselves.
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated and will be removed", ""),
    # The HQQ quantizer passes torch.from_numpy a read-only weight array that it never writes to.
    (UserWarning, r"The given NumPy array is not writable", r"onnxruntime\.quantization\."),
)
# Library log messages of the same kind: logger name ("" for the root) -> message prefixes dropped from that logger.
KNOWN_LOG_NOISE: dict[str, tuple[str, ...]] = {
    "transformers.utils.generic": ("`past_key_values`/`cache_params` are deprecated",),
    # bitsandbytes' CPU backend (imported with peft) asks the kernels package for a Hub kernel and falls
    # back to its own code without it: offline (go_offline) kernels says it skips the trust check, online
    # bitsandbytes says the kernel could not be loaded. Either way nothing changes for the user.
    "kernels._internals.hf_hub": ("Skipping publisher trust check for 'kernels-community/",),
    "bitsandbytes.backends.cpu.ops": ("Failed to load CPU gemm_4bit_forward from kernels-community",),
}
# The quantizers' own advice, said on the root logger by quantize_dynamic on every call: autotune gives
# them the model builder's graphs, which need no pre-processing.
QUANTIZER_NOISE = ("Please consider to run pre-processing before quantization",)
QUANTIZER_LOGGERS = ("onnxruntime.quantization", "neural_compressor")
# Libraries whose WARNING records go through autotune's handler, each distinct message once.
# (onnxruntime_genai is not one: the model builder sends its records to the build's log file.)
LIBRARY_LOGGERS = ("transformers", "datasets", "peft", "onnxruntime", "optuna", "accelerate", "torch", "bitsandbytes",
                   "evaluate", "kernels", "huggingface_hub")
# Their logging modules that install a handler of their own when first imported: module -> library logger.
LIBRARY_LOGGING_MODULES = {"transformers.utils.logging": "transformers", "datasets.utils.logging": "datasets",
                           "optuna.logging": "optuna", "huggingface_hub.utils.logging": "huggingface_hub"}


class DropMessages(logging.Filter):
    """Drops records whose message starts with one of ``prefixes`` (a logger filter: that logger only)."""

    def __init__(self, prefixes: Iterable[str]) -> None:
        super().__init__()
        self.prefixes = tuple(prefixes)

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def quiet_known_warnings() -> None:
    """Filter exactly the known-noise messages (idempotent); every other warning is left as Python shows it."""
    for category, pattern, module in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=category, module=module)
    for name, prefixes in KNOWN_LOG_NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropMessages) for f in logger.filters):
            logger.addFilter(DropMessages(prefixes))


@contextlib.contextmanager
def dropped_messages(name: str, prefixes: Iterable[str]) -> Iterator[None]:
    """For the duration, records of logger ``name`` ("" for the root) whose message starts with one of
    ``prefixes`` are dropped; that filter alone is removed afterwards (other loggers and any filter added
    meanwhile are untouched)."""
    logger = logging.getLogger(name or None)
    drop = DropMessages(prefixes)
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


@contextlib.contextmanager
def library_level(name: str, level: int) -> Iterator[None]:
    """For the duration, library logger ``name`` logs from ``level`` up (Optuna's per-trial INFO lines,
    say); its previous level is restored afterwards, also after an exception."""
    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


@contextlib.contextmanager
def quiet_quantizers() -> Iterator[None]:
    """ONNX Runtime's quantizers log every node at INFO, and quantize_dynamic gives its pre-processing
    advice on the root logger at every call: for the call, their loggers show warnings only and that
    advice is dropped. Scoped to their own loggers and restored afterwards: autotune's and every other
    logger (other threads included), ``sys.stdout`` and the warning filters are left alone. They print
    nothing to stdout for the passes autotune runs; progress bars are tqdm's, off through TQDM_DISABLE."""
    with contextlib.ExitStack() as stack:
        for name in QUANTIZER_LOGGERS:
            stack.enter_context(library_level(name, logging.WARNING))
        stack.enter_context(dropped_messages("", QUANTIZER_NOISE))
        yield


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


class LastResort(logging.StreamHandler):
    """stderr at WARNING for the records no handler of their own logger chain took: what Python's
    ``logging.lastResort`` does, as a real root handler (a library that prints its own records, such
    as datasets or transformers, is not printed twice)."""

    def __init__(self) -> None:
        super().__init__()
        self.setLevel(logging.WARNING)
        self.setFormatter(logging.Formatter("%(name)s: %(levelname)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        logger: logging.Logger | None = logging.getLogger(record.name)
        while logger is not None and logger is not logging.root:
            if logger.handlers:
                return
            logger = logger.parent
        super().emit(record)


def guard_root_logger() -> None:
    """Give the root logger a :class:`LastResort` handler.

    onnxruntime's ``matmul_nbits_quantizer`` (imported by the model builder) calls
    ``logging.basicConfig(level=INFO)`` at import; on a root without handlers that sends every
    library's INFO records to the terminal for the rest of the process. With a handler in place,
    basicConfig does nothing.
    """
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(LastResort())


@contextlib.contextmanager
def routed_loggers(names: Iterable[str], sink: TextIO, level: int = logging.INFO) -> Iterator[None]:
    """For the duration, records of the named loggers (``level`` and above) go to ``sink`` only.

    Each logger's level, handlers and propagate flag are restored afterwards; every other logger
    (autotune's own, from any thread) is untouched, unlike a process-wide ``logging.disable``.
    """
    handler = logging.StreamHandler(sink)
    handler.setFormatter(logging.Formatter("%(name)s [%(levelname)s] %(message)s"))
    saved = []
    for name in names:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate))
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
    try:
        yield
    finally:
        for logger, previous_level, propagate in saved:
            logger.removeHandler(handler)
            logger.setLevel(previous_level)
            logger.propagate = propagate


def setup_logging(level: int = 1, *, prefix: str = "") -> None:
    """autotune's console logging at Olive's severity ``level``; ``prefix`` marks each line (a parallel
    job's, e.g. ``[job 2] ``)."""
    from rich.logging import RichHandler

    handler = RichHandler(show_path=False, show_time=False, markup=False, rich_tracebacks=False)
    handler.setFormatter(logging.Formatter(f"{prefix}%(message)s"))
    root = logging.getLogger("autotune")
    root.handlers[:] = [handler]
    root.setLevel(OLIVE_SEVERITY.get(level, logging.INFO))
    root.propagate = False
    route_library_logging()
    guard_root_logger()
    quiet_known_warnings()
