"""One fresh process per model for latency and peak memory: load the model, time generation (warm-up +
repeats), then read this process's own peak RSS, and print it all as one JSON line.

A fresh process, so what the study process trained or loaded before touches neither number; one
process for both, so the model is loaded once (the footprint metric reuses what the latency metric's
process measured, see :func:`run_probe`).

Command line (the last two arguments optional; ``bench/int4_vs_fp32.py`` uses the first four)::

    python -m autotune.evaluation.memory_probe MODEL_DIR KIND PROVIDER TOKENS [SETTINGS_JSON]

``SETTINGS_JSON``: ``{"prompt_tokens", "generate_tokens", "warmup", "repeats", "trust_remote_code"}`` and optionally
``"precision", "max_repeats", "max_seconds"`` (repeats to a stated precision, see :mod:`autotune.evaluation.latency`);
without it the process generates ``TOKENS`` tokens once after a short prompt (memory only).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

FILLER = (
    "The quick brown fox jumps over the lazy dog while the weather report promises rain for the weekend and "
    "everyone in the office plans a short trip to the coast to see the old lighthouse and the harbour. "
)
# Where a peak comes from: VmHWM is this process's own; ru_maxrss is inherited from the parent across
# fork/exec, so it can be the study process's peak, not the model's.
OWN_PEAK = "VmHWM"
INHERITED_PEAK = "ru_maxrss"


def peak_rss() -> tuple[float, str]:
    """This process's peak RSS in MB and where it was read (:data:`OWN_PEAK` or, where
    /proc/self/status has no VmHWM, :data:`INHERITED_PEAK`, which the caller must not trust)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024, OWN_PEAK
    except OSError:
        pass
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale, INHERITED_PEAK


def peak_rss_mb() -> float:
    """The peak alone (kept for callers of the old name)."""
    return peak_rss()[0]


def measure(backend: Any, settings: dict[str, Any]) -> dict[str, Any]:
    """Warm-up then timed repeats of greedy generation of exactly ``generate_tokens`` tokens: at least
    ``repeats``, then until the median decode ms/token is known to ``precision`` or a cap (``max_repeats``,
    ``max_seconds``) is reached (:func:`autotune.evaluation.precision.repeat_until_precise`)."""
    from autotune.evaluation.precision import repeat_until_precise

    filler = backend.token_ids(FILLER)
    ids = (filler * (settings["prompt_tokens"] // len(filler) + 1))[: settings["prompt_tokens"]]
    for _ in range(settings["warmup"]):
        backend.generate(ids, settings["generate_tokens"], ignore_eos=True)
    samples = []

    def once() -> float:
        tokens, ttft, steps = backend.generate(ids, settings["generate_tokens"], ignore_eos=True)
        samples.append({"tokens": len(tokens), "ttft_s": ttft, "steps_s": steps})
        return sum(steps) / len(steps) if steps else 0.0  # seconds per decode step of this repeat

    _, stopped_by = repeat_until_precise(
        once, min_repeats=settings["repeats"], max_repeats=settings.get("max_repeats", settings["repeats"]),
        max_seconds=settings.get("max_seconds", float("inf")), precision=settings.get("precision", 0.0))
    return {"prompt_tokens": len(ids), "samples": samples, "stopped_by": stopped_by}


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    path, kind, provider, tokens = Path(args[0]), args[1], args[2], int(args[3])
    settings = json.loads(args[4]) if len(args) > 4 else None
    from autotune.models.hub import go_offline

    go_offline()
    if kind == "onnx":
        import onnxruntime_genai  # noqa: F401
    else:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    runtime, _ = peak_rss()
    from autotune.evaluation.backends import open_backend
    from autotune.evaluation.base import EvalModel

    trust = bool(settings and settings.get("trust_remote_code"))
    backend = open_backend(EvalModel(path=path, kind=kind, key=""), provider=provider, trust_remote_code=trust)
    out: dict[str, Any] = {}
    if settings:
        out["latency"] = measure(backend, settings)
    else:
        ids = backend.token_ids("Hello, how are you today?")
        backend.generate(ids, tokens, ignore_eos=True)
    peak, source = peak_rss()
    out.update({"peak_rss_mb": peak, "runtime_rss_mb": runtime, "rss_source": source})
    print(json.dumps(out))


def run_probe(model: Any, *, provider: str, tokens: int, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run :func:`main` in a fresh interpreter and return its JSON (raises with the child's last line)."""
    cmd = [sys.executable, "-m", "autotune.evaluation.memory_probe", str(model.path), model.kind, provider, str(tokens)]
    if settings is not None:
        cmd.append(json.dumps(settings))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        raise RuntimeError(f"the measurement process failed: {tail[0][:300]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
