"""Run the autotune CLI with a pause injected at a known point, so a test can kill -9 it there, or hold it
there until another process has done something.

``AUTOTUNE_TEST_PAUSE``: ``fine-tune`` (at the 2nd optimizer step of a fine-tune), ``build`` (before
the model builder runs) or ``cache-write`` (build files written into the cache's staging folder, not
yet renamed). ``AUTOTUNE_TEST_PAUSE_AT``: which occurrence (1-based). The marker file
(``AUTOTUNE_TEST_MARKER``) says when the pause began. ``AUTOTUNE_TEST_RESUME``: a file whose appearance ends
the pause (without it, the pause lasts 300 s: long enough to be killed in). Fault injection for tests only.

In-process (a study run by the test's own process, e.g. the first job of ``run --jobs``), :func:`hold`
installs the same hooks for a ``with`` block and ends the pause when a condition holds.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

COUNTS: dict[str, int] = {}
# Set by hold() for an in-process pause (else the environment says): kind, occurrence, end condition, seconds.
_HELD: tuple[str, int, Callable[[], bool], float] | None = None


def _settings() -> tuple[str | None, int, Callable[[], bool], float]:
    if _HELD is not None:
        return _HELD
    resume = os.environ.get("AUTOTUNE_TEST_RESUME")
    return (os.environ.get("AUTOTUNE_TEST_PAUSE"), int(os.environ.get("AUTOTUNE_TEST_PAUSE_AT", "1")),
            lambda: bool(resume) and Path(resume).exists(), 300.0)


def _pause_here(kind: str) -> None:
    wanted, at, resume, seconds = _settings()
    if wanted != kind:
        return
    COUNTS[kind] = COUNTS.get(kind, 0) + 1
    if COUNTS[kind] == at:
        marker = os.environ.get("AUTOTUNE_TEST_MARKER") if _HELD is None else None
        if marker:
            Path(marker).write_text(kind)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not resume():
            time.sleep(0.1)


def install() -> Callable[[], None]:
    """Patch the pause points in; returns the function that takes them out again."""
    from transformers import Trainer

    from autotune.passes import model_builder

    real_build = model_builder.build_onnx
    real_step = Trainer.training_step
    real_train = Trainer.train

    def build(source: Path, output: Path, *args: Any, **kwargs: Any) -> None:
        _pause_here("build")
        real_build(source, output, *args, **kwargs)
        _pause_here("cache-write")

    def train(self: Any, *args: Any, **kwargs: Any) -> Any:
        self._autotune_steps = 0
        return real_train(self, *args, **kwargs)

    def step(self: Any, *args: Any, **kwargs: Any) -> Any:
        self._autotune_steps = getattr(self, "_autotune_steps", 0) + 1
        if self._autotune_steps == 2:
            _pause_here("fine-tune")
        return real_step(self, *args, **kwargs)

    model_builder.build_onnx = build
    Trainer.train = train
    Trainer.training_step = step

    def uninstall() -> None:
        model_builder.build_onnx = real_build
        Trainer.train = real_train
        Trainer.training_step = real_step

    return uninstall


@contextlib.contextmanager
def hold(kind: str, until: Callable[[], bool], *, at: int = 1, timeout: float = 300.0) -> Iterator[None]:
    """In this process, for the block: pause at the ``at``-th ``kind`` point until ``until()`` is true (checked
    every 0.1 s; at most ``timeout`` s, after which the run goes on and the test's own assertions say why).
    Nothing reaches the environment: processes started meanwhile are not held."""
    global _HELD

    previous, counts = _HELD, dict(COUNTS)
    _HELD = (kind, at, until, timeout)
    COUNTS.clear()
    uninstall = install()
    try:
        yield
    finally:
        uninstall()
        _HELD = previous
        COUNTS.clear()
        COUNTS.update(counts)


if __name__ == "__main__":
    import faulthandler
    import signal

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # a test that times out asks for every thread's stack
    install()
    from autotune.cli import main

    sys.argv = ["autotune", *sys.argv[1:]]
    main()
