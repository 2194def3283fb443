"""Child process: load a model folder, generate a few tokens, print peak RSS as JSON."""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path


def peak_rss_mb() -> float:
    """This process's own peak RSS. VmHWM, not ru_maxrss: a child inherits ru_maxrss from its parent
    across fork/exec, so a probe started by a large study process would report the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    path, kind, provider, tokens = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
    from autotune.logging_setup import go_offline

    go_offline()
    if kind == "onnx":
        import onnxruntime_genai  # noqa: F401
    else:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    runtime = peak_rss_mb()
    from autotune.evaluation.backends import open_backend
    from autotune.evaluation.base import EvalModel

    backend = open_backend(EvalModel(path=path, kind=kind, key=""), provider=provider)
    ids = list(backend.tokenizer("Hello, how are you today?", add_special_tokens=True)["input_ids"])
    backend.generate(ids, tokens, ignore_eos=True)
    peak = peak_rss_mb()
    print(json.dumps({"peak_rss_mb": peak, "runtime_rss_mb": runtime}))


if __name__ == "__main__":
    main()
