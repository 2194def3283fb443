"""Ctrl-C always ends the CLI: a cleanup that hangs after the first Ctrl-C is cut off after a grace
period, and a second Ctrl-C ends the process at once."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

HANGING_CLEANUP = """
import signal, sys, time
from autotune import cli
cli.INTERRUPT_GRACE_SECONDS = float(sys.argv[1])
signal.signal(signal.SIGINT, cli._on_interrupt)
try:  # "ready" inside the try: a Ctrl-C that lands during the print is still handled
    print("ready", flush=True)
    time.sleep(60)
except KeyboardInterrupt:
    time.sleep(60)  # a cleanup that never finishes
"""


@pytest.mark.parametrize(("grace", "second_ctrl_c"), [(1.0, False), (60.0, True)])
def test_ctrl_c_ends_the_process_even_when_cleanup_hangs(grace: float, second_ctrl_c: bool) -> None:
    proc = subprocess.Popen([sys.executable, "-c", HANGING_CLEANUP, str(grace)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGINT)
    if second_ctrl_c:
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 130
