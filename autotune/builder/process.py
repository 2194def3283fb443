"""onnxruntime-genai's model builder in a child process of its own, so that what it prints goes to the
build's log file and nothing else does.

Why a process: the builder prints every tensor it writes (Python ``print``; native code may write to the file
descriptors directly). Swapping ``sys.stdout`` (``contextlib.redirect_stdout``) swaps it for every thread of
the process, and pointing fds 1 and 2 at the log (``os.dup2``) catches every thread's writes too: either way
the study's heartbeat, the progress display or another thread's console lines land in ``model_builder.log``.
Only in a process of its own do the builder's output and nothing but it go to that file.

The cost is the process's imports (torch, transformers, onnx: 5.3 s for the first build of the tiny test
model on 2 busy cores, against 1.45 s in a process that has torch and transformers already) and its memory
(~335 MB of its own between builds). So it is started once, at the first build, and serves every later
build of this process in turn (each build's fds 1 and 2 pointed at its own log: it runs nothing else); a
later build of the tiny model takes 0.09 s, as in-process.

It gets this process's environment, working folder, ``sys.path`` and torch thread count with each build,
and ends when this process does (its stdin closes); a process that died (killed, out of memory) is
replaced at the next build. An error of the build is raised here with its type where this process knows
that type (else ``RuntimeError`` naming it), the child's traceback as its cause, and the traceback in the log.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import gc
import json
import os
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["run_build"]

_LOCK = threading.Lock()
_WORKER: subprocess.Popen[str] | None = None
_OWNER = 0  # the pid that started _WORKER (a forked child must start its own)


class ChildTraceback(Exception):
    """The builder process's traceback, as the cause of the error raised here (as ``concurrent.futures`` does)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


def run_build(request: dict[str, Any], log_path: Path) -> None:
    """Run ``builder.parse_extra_options`` + ``builder.create_model`` with ``request['args']`` and
    ``request['extra_options']`` in the builder process; its output (and its loggers ``request['loggers']``,
    at INFO) go to ``log_path``. Raises the build's error."""
    try:
        cwd: str | None = os.getcwd()
    except OSError:  # the working folder was removed: the paths are absolute anyway
        cwd = None
    torch = sys.modules.get("torch")
    message = json.dumps({**request, "log": str(log_path), "env": dict(os.environ), "cwd": cwd,
                          "torch_threads": torch.get_num_threads() if torch is not None else None}) + "\n"
    with _LOCK:  # one build at a time per process (the builder process serves them in turn)
        for attempt in (1, 2):
            worker = _worker()
            try:
                assert worker.stdin is not None and worker.stdout is not None
                worker.stdin.write(message)
                worker.stdin.flush()
                line = worker.stdout.readline()
                break
            except BrokenPipeError:  # it ended while idle (killed): once more with a new one
                _stop(kill=True)
                if attempt == 2:
                    raise
            except BaseException:  # interrupted (Ctrl-C, a test's timeout) with a build under way: end it
                _stop(kill=True)
                raise
        if not line:
            code = worker.wait()
            _stop(kill=True)
            raise RuntimeError(f"the model builder's process ended during the build (exit code {code}); see {log_path} "
                               "(or this process's stderr, where it ended before the build began)")
    result = json.loads(line)
    if not result["ok"]:
        raise _error(result, log_path)


def _error(result: dict[str, Any], log_path: Path) -> BaseException:
    """The build's error with its own type where this process has it (and it takes a message), else RuntimeError."""
    message = f"{result['message']}\n(raised in the model builder's process; its traceback is in {log_path})"
    kind: Any = sys.modules.get(result["module"])  # only a module imported here already: no import for an error
    for part in result["name"].split("."):
        kind = getattr(kind, part, None)
    error: BaseException | None = None
    if isinstance(kind, type) and issubclass(kind, Exception):
        try:
            error = kind(message)
        except Exception:  # a type that wants other arguments
            error = None
    if error is None:
        error = RuntimeError(f"{result['module']}.{result['name']}: {message}")
    error.__cause__ = ChildTraceback(result["traceback"])
    return error


def _worker() -> subprocess.Popen[str]:
    global _WORKER, _OWNER
    if _WORKER is not None and (os.getpid() != _OWNER or _WORKER.poll() is not None):
        if os.getpid() == _OWNER:
            _stop(kill=True)
        _WORKER = None  # a forked process leaves its parent's builder process alone
    if _WORKER is None:
        path = [entry for entry in sys.path if isinstance(entry, str)]  # the same autotune and libraries as here
        code = f"import sys; sys.path[:] = {path!r}; from autotune.builder.process import serve; serve(parent={os.getpid()})"
        # A session of its own: the terminal's Ctrl-C reaches this process, which ends the builder's itself.
        _WORKER = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   text=True, encoding="utf-8", start_new_session=True)
        _OWNER = os.getpid()
    return _WORKER


def _stop(*, kill: bool = False) -> None:
    """End the builder process: at exit by closing its stdin (it ends when idle), else at once."""
    global _WORKER
    worker, _WORKER = _WORKER, None
    if worker is None or os.getpid() != _OWNER:
        return
    with contextlib.suppress(OSError):
        if kill:
            worker.kill()
        assert worker.stdin is not None
        worker.stdin.close()
    try:
        worker.wait(timeout=None if kill else 5)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()
    if worker.stdout is not None:
        worker.stdout.close()


atexit.register(_stop)


def _forget_in_child() -> None:
    """A forked process starts its own builder process: the parent's lock may be held by a thread the fork did
    not copy, and the parent's pipes are not this process's to use or close."""
    global _LOCK, _WORKER
    _LOCK = threading.Lock()
    _WORKER = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


# The builder process's side.


def serve(*, parent: int) -> None:
    """Read one build request per stdin line, answer each with one line on the original stdout."""
    _die_with_parent(parent)
    reply = os.fdopen(os.dup(1), "w", encoding="utf-8")
    idle = os.open(os.devnull, os.O_WRONLY)
    os.dup2(idle, 1)  # between builds, stray output goes nowhere (stderr stays the parent's)
    os.close(idle)
    from autotune.device import release_memory

    for count, line in enumerate(sys.stdin):
        reply.write(json.dumps(_build(json.loads(line))) + "\n")
        reply.flush()
        release_memory()  # the builder's model and graph, garbage now: handed back while the caller goes on
        if count == 0:
            gc.freeze()  # the libraries' objects, alive for good: later collections skip them (0.2 s -> 0.01 s)


def _die_with_parent(parent: int) -> None:
    """End this process when its parent is gone (kill -9 included), even in the middle of a build: a build must
    not go on writing into a cache staging folder that the parent's rerun may already be cleaning. A watchdog
    thread, not PR_SET_PDEATHSIG: that signal follows the parent's *thread* that started this process, so a
    build started from a short-lived thread would be killed with it."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="builder-parent-watchdog", daemon=True).start()


def _build(request: dict[str, Any]) -> dict[str, Any]:
    from autotune.logging_setup import routed_loggers

    os.environ.clear()
    os.environ.update(request["env"])
    if request["cwd"]:
        with contextlib.suppress(OSError):
            os.chdir(request["cwd"])
    with open(request["log"], "w", encoding="utf-8") as sink, _descriptors_to(sink), \
            routed_loggers(request["loggers"], sys.stderr):
        try:
            if request["torch_threads"]:
                import torch

                torch.set_num_threads(request["torch_threads"])
            from onnxruntime_genai.models import builder

            args = request["args"]
            extra = builder.parse_extra_options(*args, request["extra_options"])
            from autotune.builder.support import adapt_builder_config  # the config fields transformers 5 writes otherwise
            adapt_builder_config(extra["hf_details"]["hf_config"])
            builder.create_model(*args, **extra)
        except BaseException as exc:  # SystemExit and KeyboardInterrupt too: the process serves on
            traceback.print_exc()
            return {"ok": False, "module": type(exc).__module__, "name": type(exc).__qualname__, "message": str(exc),
                    "traceback": traceback.format_exc()}
    return {"ok": True}


@contextlib.contextmanager
def _descriptors_to(sink: IO[str]) -> Iterator[None]:
    """fds 1 and 2 (Python's and C's writes) go to ``sink`` for the duration: this process runs nothing else."""
    _flush()
    saved = os.dup(1), os.dup(2)
    try:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        yield
    finally:
        _flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)  # C stdio buffers (the builder's native code)
