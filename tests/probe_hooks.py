"""Run the autotune CLI on a CPU that has bf16 instructions, with the training-precision probe's clock
saying which precision is faster (``AUTOTUNE_TEST_PROBE_FASTER``: ``bf16`` or ``fp32``): the load a worker
happens to see, made deterministic. Fault injection for tests only."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable


def ticking(seconds_per_call: float) -> Callable[[], float]:
    """A clock that advances ``seconds_per_call`` at each reading: every probe step takes that long."""
    now = [0.0]

    def clock() -> float:
        now[0] += seconds_per_call
        return now[0]

    return clock


def install() -> None:
    import autotune.device
    import autotune.training.precision_probe as probe

    faster = os.environ["AUTOTUNE_TEST_PROBE_FASTER"]
    autotune.device.bf16_supported = lambda on: on == "cpu"  # type: ignore[assignment]
    probe.probe_clock = lambda precision: ticking(0.5 if precision == faster else 1.0)  # type: ignore[assignment]


if __name__ == "__main__":
    install()
    from autotune.cli import main

    sys.argv = ["autotune", *sys.argv[1:]]
    main()
