"""Run the autotune CLI with a pause injected at a known point, so a test can kill -9 it there.

``AUTOTUNE_TEST_PAUSE``: ``fine-tune`` (at the 2nd optimizer step of a fine-tune), ``build`` (before
the model builder runs) or ``cache-write`` (build files written into the cache's staging folder, not
yet renamed). ``AUTOTUNE_TEST_PAUSE_AT``: which occurrence (1-based). The marker file says when the
pause began. Fault injection for tests only.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

COUNTS: dict[str, int] = {}


def _pause_here(kind: str) -> None:
    if os.environ.get("AUTOTUNE_TEST_PAUSE") != kind:
        return
    COUNTS[kind] = COUNTS.get(kind, 0) + 1
    if COUNTS[kind] == int(os.environ.get("AUTOTUNE_TEST_PAUSE_AT", "1")):
        Path(os.environ["AUTOTUNE_TEST_MARKER"]).write_text(kind)
        time.sleep(300)


def install() -> None:
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


if __name__ == "__main__":
    import faulthandler
    import signal

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # a test that times out asks for every thread's stack
    install()
    from autotune.cli import main

    sys.argv = ["autotune", *sys.argv[1:]]
    main()
