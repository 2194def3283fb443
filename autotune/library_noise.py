"""The library messages that are known noise, filtered one by one (every other warning still shows), and the scoped
ways autotune quiets a library for one call: at that library's logger, undone afterwards (:func:`library_level`,
:func:`dropped_messages`, :func:`quiet_quantizers`; :func:`autotune.warning_filters.ignored_warning` for a warning
category). Never ``logging.disable``, a swapped ``sys.stdout`` or a replaced warning-filter list, which would
silence every other thread of the process too."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterable, Iterator

__all__ = ["KNOWN_LOG_NOISE", "KNOWN_WARNINGS", "QUANTIZER_LOGGERS", "QUANTIZER_NOISE", "DropMessages", "dropped_messages",
           "library_level", "quiet_known_warnings", "quiet_quantizers"]

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
