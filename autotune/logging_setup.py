"""Console logging (rich) and the offline switches set before any HF library is imported."""

from __future__ import annotations

import logging
import os
import warnings

OLIVE_SEVERITY = {0: logging.DEBUG, 1: logging.INFO, 2: logging.WARNING, 3: logging.ERROR, 4: logging.CRITICAL}


def go_offline() -> None:
    """No hub at run time unless the user opts in with AUTOTUNE_ALLOW_HUB=1; no telemetry."""
    if os.environ.get("AUTOTUNE_ALLOW_HUB") != "1":
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
            os.environ.setdefault(name, "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")


def setup_logging(level: int = 1) -> None:
    from rich.logging import RichHandler

    handler = RichHandler(show_path=False, show_time=False, markup=False, rich_tracebacks=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("autotune")
    root.handlers[:] = [handler]
    root.setLevel(OLIVE_SEVERITY.get(level, logging.INFO))
    root.propagate = False
    for noisy in ("transformers", "datasets", "peft", "onnxruntime", "optuna", "accelerate", "torch", "bitsandbytes", "evaluate"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
