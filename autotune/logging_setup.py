"""Console logging (rich) at Olive's severity levels, a last-resort root handler, and scoped routing of named loggers to a
file. The libraries' records reach it through :mod:`autotune.library_logging`; known noise is filtered by
:mod:`autotune.library_noise`; the network switches set before any HF library is imported are
:func:`autotune.models.hub.go_offline`."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from typing import TextIO

from autotune.library_logging import route_library_logging
from autotune.library_noise import quiet_known_warnings

__all__ = ["OLIVE_SEVERITY", "LastResort", "guard_root_logger", "routed_loggers", "setup_logging"]

OLIVE_SEVERITY = {0: logging.DEBUG, 1: logging.INFO, 2: logging.WARNING, 3: logging.ERROR, 4: logging.CRITICAL}


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
