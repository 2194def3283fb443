"""``run --jobs N``: N trials at once on one machine, in separate processes.

The run's own process prepares the study (meta, baseline, grid queue) and runs trials itself; N-1
more processes join that study and run trials beside it. They share the storage (a queued trial is
taken by one process only) and the cache folder (an entry is built by one process; the others wait
for it, see :meth:`autotune.cache.Cache.claim`). The machine's cores are divided between the jobs.
Selection, export and the report run once, in the run's process, after every job has ended.
"""

from __future__ import annotations

import logging
import multiprocessing
import sys
import time
from typing import Any

from autotune.errors import ConfigError
from autotune.threads import cpu_share, usable_cpus

__all__ = ["Jobs", "check_jobs", "optimize_in_jobs", "split_trials", "threads_per_job"]

log = logging.getLogger("autotune")


def check_jobs(jobs: int, *, search: bool) -> None:
    if jobs < 1:
        raise ConfigError("--jobs", f"expected a number of parallel trials >= 1, got {jobs}")
    if jobs > 1 and not search:
        raise ConfigError("--jobs", "a single run (search_strategy: false) has one trial; --jobs applies to a search")


def threads_per_job(jobs: int) -> int:
    """Each job's share of the cores (at least one): N jobs of all cores each would oversubscribe."""
    return max(1, usable_cpus() // jobs)


def split_trials(n_trials: int | None, jobs: int) -> list[int | None]:
    """``--n-trials`` divided between the jobs (the total stays what the user asked); None: no limit."""
    if n_trials is None:
        return [None] * jobs
    return [n_trials // jobs + (1 if i < n_trials % jobs else 0) for i in range(jobs)]


def _job_main(config: Any, *, storage_url: str, job: int, n_trials: int | None, timeout: float | None,
              fail_fast: bool, threads: int, ready: Any) -> None:
    """One extra job: join the prepared study and run trials until a stopping rule says stop."""
    from autotune.errors import UserError
    from autotune.logging_setup import setup_logging
    from autotune.models.hub import go_offline

    go_offline()
    setup_logging(config.engine.log_severity_level, prefix=f"[job {job + 1}] ")

    from autotune.run_context import RunContext
    from autotune.search.study import Study

    try:
        with cpu_share(threads):
            study = Study(RunContext(config), storage=storage_url, fail_fast=fail_fast)
            study.join(job=job)
            ready.set()
            study.optimize(n_trials=n_trials, timeout=timeout)
    except UserError as exc:
        log.error("%s", exc)
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl-C reaches every job: the cut trial is recorded and queued again
        sys.exit(130)


class Jobs:
    """The extra jobs of a run: started after the study is prepared, waited for before it finishes."""

    def __init__(self, config: Any, *, storage_url: str, jobs: int, n_trials: list[int | None], timeout: float | None,
                 fail_fast: bool) -> None:
        self.threads = threads_per_job(jobs)
        context = multiprocessing.get_context("spawn")  # fork would copy the parent's torch threads and locks
        wanted = [job for job in range(1, jobs) if n_trials[job] != 0]
        self.ready = [context.Event() for _ in wanted]
        self.procs = [
            context.Process(target=_job_main, name=f"autotune-job-{job + 1}", args=(config,),
                            kwargs={"storage_url": storage_url, "job": job, "n_trials": n_trials[job], "timeout": timeout,
                                    "fail_fast": fail_fast, "threads": self.threads, "ready": ready})
            for job, ready in zip(wanted, self.ready)
        ]

    def start(self) -> None:
        for proc in self.procs:
            proc.start()
        if self.procs:
            log.info("%d more job(s) started (pids %s), %d thread(s) each", len(self.procs),
                     [p.pid for p in self.procs], self.threads)

    def wait_ready(self, timeout: float = 300) -> None:
        """Until every job has joined the study (its imports and data take seconds): the jobs then take
        their first trials together instead of this process running the queue alone meanwhile."""
        deadline = time.monotonic() + timeout
        for proc, ready in zip(self.procs, self.ready):
            while not ready.wait(0.2) and proc.is_alive() and time.monotonic() < deadline:
                pass

    def wait(self) -> list[str]:
        """Wait for every job; what went wrong in any, one line each."""
        problems = []
        for proc in self.procs:
            while proc.is_alive():
                proc.join(timeout=0.5)
            if proc.exitcode not in (0, None):
                problems.append(f"{proc.name} (pid {proc.pid}) ended with exit code {proc.exitcode}")
        return problems

    def stop(self) -> None:
        """After a Ctrl-C or an error in the run's process: give the jobs a moment to record their
        cut trials, then end them."""
        deadline = time.monotonic() + 30
        for proc in self.procs:
            proc.join(timeout=max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.terminate()


def optimize_in_jobs(study: Any, *, jobs: int, n_trials: int | None, timeout: float | None, fail_fast: bool) -> None:
    """Run the prepared ``study``'s trials in this process and ``jobs`` - 1 more; returns when all have ended."""
    cfg = study.cfg
    if any(o.kind == "latency" for o in study.meta.objectives):
        log.warning("--jobs %d: latency measured while trials share the machine is noisy; every trial that could be on the Pareto set is "
                    "measured again, alone, before selection (engine.selection.remeasure_rounds: %d)", jobs,
                    cfg.engine.selection.remeasure_rounds)
    shares = split_trials(n_trials, jobs)
    extra = Jobs(cfg, storage_url=study.storage_url, jobs=jobs, n_trials=shares, timeout=timeout, fail_fast=fail_fast)
    # The share ends with the trials: selection re-measures latency alone, with every core.
    with cpu_share(extra.threads):
        extra.start()
        try:
            extra.wait_ready()
            if shares[0] != 0:
                study.optimize(n_trials=shares[0], timeout=timeout)
        except BaseException:
            extra.stop()
            raise
    for problem in extra.wait():
        log.warning("%s; its trials are recorded in the study (see logs/)", problem)
