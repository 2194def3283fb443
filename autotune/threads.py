"""A process's share of the CPU cores (``run --jobs N``), for every runtime that starts threads.

:func:`cpu_share` gives the share to torch (now), to OpenMP/MKL (the variables a child process reads)
and to ONNX Runtime through :data:`THREADS_ENV`: every session autotune opens, here or in a child
process such as the latency probe, reads it (:func:`ort_session_options`, :func:`genai_session_overlay`)
and sets ``intra_op_num_threads`` to it. ONNX Runtime reads neither OMP_NUM_THREADS nor MKL's
variable: without this its sessions would each start a pool of every core, and the latency of N jobs
would be measured under N-fold contention. On exit every variable and torch's count are as they were.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import Any

__all__ = ["THREADS_ENV", "cpu_share", "genai_session_overlay", "ort_session_options", "session_threads", "usable_cpus"]

THREADS_ENV = "AUTOTUNE_INTRA_OP_THREADS"
SHARE_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", THREADS_ENV)


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def session_threads() -> int | None:
    """The intra-op thread count an ONNX Runtime session of this process should use; None: its default."""
    value = os.environ.get(THREADS_ENV, "")
    return int(value) if value.isdigit() and int(value) > 0 else None


@contextlib.contextmanager
def cpu_share(threads: int) -> Iterator[None]:
    """For the duration, this process and the processes it starts use ``threads`` threads; the
    environment and torch's thread count are restored afterwards, also after an exception."""
    import torch

    saved = {name: os.environ.get(name) for name in SHARE_VARIABLES}
    torch_threads = torch.get_num_threads()
    for name in SHARE_VARIABLES:
        os.environ[name] = str(threads)
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        torch.set_num_threads(torch_threads)


def ort_session_options(options: Any = None) -> Any:
    """``options`` (or new ``onnxruntime.SessionOptions``) with this process's share of the cores, if any."""
    import onnxruntime as ort

    options = options if options is not None else ort.SessionOptions()
    threads = session_threads()
    if threads is not None:
        options.intra_op_num_threads = threads
    return options


def genai_session_overlay() -> str | None:
    """The genai_config overlay (``og.Config.overlay``) that gives the decoder's session this process's
    share of the cores; None without a share. onnxruntime-genai 0.18 validates the keys it is given."""
    threads = session_threads()
    if threads is None:
        return None
    return json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}})
