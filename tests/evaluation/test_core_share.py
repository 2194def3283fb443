"""``run --jobs``: each job's ONNX Runtime sessions use its share of the cores, and the share (threads,
environment) is gone once the jobs' helper code returns."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from autotune.evaluation.scoring import OrtLabelScorer
from autotune.threads import THREADS_ENV, cpu_share


def test_a_label_scoring_session_takes_the_jobs_share_of_the_cores(tiny_onnx: Path) -> None:
    for share in (1, 2):
        with cpu_share(share):
            scorer = OrtLabelScorer(tiny_onnx, provider="CPUExecutionProvider")
        assert scorer.session.get_session_options().intra_op_num_threads == share
    alone = OrtLabelScorer(tiny_onnx, provider="CPUExecutionProvider")
    assert alone.session.get_session_options().intra_op_num_threads == 0  # no share: ONNX Runtime's default


THREAD_COUNT = """
import os, sys
from pathlib import Path
from autotune.evaluation.backends import GenaiBackend
from autotune.evaluation.base import EvalModel
backend = GenaiBackend(EvalModel(path=Path(sys.argv[1]), kind="onnx", key=""), provider="CPUExecutionProvider")
before = len(os.listdir("/proc/self/task"))
backend.genai_model  # loads the model: its session starts its intra-op thread pool
print(len(os.listdir("/proc/self/task")) - before)
"""


def _threads_started(model: Path, share: int) -> int:
    env = {**os.environ, THREADS_ENV: str(share)}
    proc = subprocess.run([sys.executable, "-c", THREAD_COUNT, str(model)], capture_output=True, text=True, env=env,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return int(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads through /proc")
def test_a_genai_model_takes_the_jobs_share_of_the_cores(tiny_onnx: Path) -> None:
    # The latency probe is such a process: it inherits the share through the environment. An intra-op
    # pool of n threads is n - 1 threads besides the caller's.
    assert _threads_started(tiny_onnx, 3) - _threads_started(tiny_onnx, 1) == 2


def test_the_jobs_helper_leaves_the_thread_settings_as_they_were(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from autotune.search.jobs import optimize_in_jobs

    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.delenv(THREADS_ENV, raising=False)
    torch_threads = torch.get_num_threads()
    during: dict[str, Any] = {}

    class OneJobsShareOfTrials:  # with 1 trial over 2 jobs the second job has none: no process is started
        cfg = SimpleNamespace(engine=SimpleNamespace(selection=SimpleNamespace(remeasure_rounds=3)))
        meta = SimpleNamespace(objectives=[])
        storage_url = "sqlite:///unused.db"

        def optimize(self, *, n_trials: int | None, timeout: float | None) -> None:
            during.update({name: os.environ.get(name) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", THREADS_ENV)})
            during["torch"] = torch.get_num_threads()

    optimize_in_jobs(OneJobsShareOfTrials(), jobs=2, n_trials=1, timeout=None, fail_fast=False)
    share = str(max(1, len(os.sched_getaffinity(0)) // 2))
    assert during == {"OMP_NUM_THREADS": share, "MKL_NUM_THREADS": share, THREADS_ENV: share, "torch": int(share)}
    assert os.environ["OMP_NUM_THREADS"] == "7"
    assert "MKL_NUM_THREADS" not in os.environ and THREADS_ENV not in os.environ
    assert torch.get_num_threads() == torch_threads


def test_the_share_is_undone_after_an_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with pytest.raises(RuntimeError), cpu_share(1):
        assert os.environ["OMP_NUM_THREADS"] == "1"
        raise RuntimeError("a trial failed")
    assert "OMP_NUM_THREADS" not in os.environ
