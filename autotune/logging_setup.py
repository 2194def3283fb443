"""Console logging (rich), the offline switches set before any HF library is imported, and the few
library messages that are known noise (filtered one by one: every other warning still shows)."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterable, Iterator
from typing import TextIO

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


# Python warnings that say nothing the user can act on: (category, message regex at its start).
KNOWN_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    # transformers 5.x renamed the PyTorch cache argument; the PyTorch backend of the evaluators passes
    # it by the old name, which every supported transformers version still accepts.
    (FutureWarning, r"`past_key_values` is deprecated and will be removed"),
    # peft and the Trainer call this renamed transformers property themselves.
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated and will be removed"),
)
# Library log messages of the same kind: logger name -> message prefixes dropped from that logger.
KNOWN_LOG_NOISE: dict[str, tuple[str, ...]] = {
    "transformers.utils.generic": ("`past_key_values`/`cache_params` are deprecated",),
}


class DropMessages(logging.Filter):
    """Drops records whose message starts with one of ``prefixes`` (a logger filter: that logger only)."""

    def __init__(self, prefixes: Iterable[str]) -> None:
        super().__init__()
        self.prefixes = tuple(prefixes)

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def quiet_known_warnings() -> None:
    """Filter exactly the known-noise messages (idempotent); every other warning is left as Python shows it."""
    for category, pattern in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=category)
    for name, prefixes in KNOWN_LOG_NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropMessages) for f in logger.filters):
            logger.addFilter(DropMessages(prefixes))


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
    for noisy in ("transformers", "datasets", "peft", "onnxruntime", "optuna", "accelerate", "torch", "bitsandbytes", "evaluate"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    guard_root_logger()
    quiet_known_warnings()
