"""Where training runs (``engine.device``) and whether the ONNX Runtime packages can serve a provider.

Everything here imports torch / onnxruntime lazily: validating a CPU config must not pay for them.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import importlib.metadata
import os
import platform
import subprocess
import sys
from typing import Any

from autotune.errors import ConfigError
from autotune.warning_filters import ignored_warning

__all__ = ["DEVICES", "bf16_supported", "check_device", "check_provider", "cpu_flags", "cuda_missing", "cuda_provider_problem",
           "device_info", "provider_platform_problem", "release_memory", "resolve_device"]

DEVICES = ("auto", "cpu", "cuda")
# CPU features that decide how fast fp32/bf16 training runs; recorded in benchmarks and trial records.
CPU_FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")
GPU_EXTRA = "the [gpu] extra (onnxruntime-gpu and onnxruntime-genai-cuda: pip install -e '.[gpu]', in place of [cpu])"


# Device nodes a CUDA (NVIDIA) or ROCm GPU shows on Linux: without any, torch can see no GPU, and
# importing torch (seconds) only to hear so would make a cached rerun slow.
GPU_DEVICE_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")


def no_gpu_device_node() -> bool:
    """True where this is Linux and no GPU device node exists (so torch cannot see a GPU)."""
    return sys.platform.startswith("linux") and not any(os.path.exists(node) for node in GPU_DEVICE_NODES)


@functools.cache
def cuda_available() -> bool:
    """Whether torch sees a CUDA GPU (False, not an error, for a CPU-only torch build)."""
    if no_gpu_device_node() and "torch" not in sys.modules:
        return False
    import torch

    return bool(torch.cuda.is_available())


def resolve_device(setting: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cpu``/``cuda`` unchanged."""
    if setting not in DEVICES:
        raise ValueError(f"unknown device {setting!r} (expected one of {', '.join(DEVICES)})")
    if setting == "auto":
        return "cuda" if cuda_available() else "cpu"
    return setting


def cuda_missing() -> str | None:
    """None when torch sees a CUDA GPU; else one line saying why ``device: cuda`` cannot run here."""
    if cuda_available():
        return None
    import torch

    build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
    return f"cuda asked for, but torch {torch.__version__} ({build}) sees no CUDA GPU here; use auto or cpu, or a CUDA build of torch"


def check_device(setting: str, where: str = "engine.device") -> None:
    """Refuse ``cuda`` where torch sees no GPU, in one line naming the key."""
    reason = cuda_missing() if setting == "cuda" else None
    if reason:
        raise ConfigError(where, reason)


@functools.cache
def cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bf16_supported(device: str) -> bool:
    """bf16 matmuls in hardware: a GPU that reports it, or a CPU with AVX512-BF16 or AMX-BF16."""
    if device == "cuda":
        import torch

        return bool(torch.cuda.is_bf16_supported())
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def _nvidia_smi(query: str) -> str:
    try:
        done = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else "unknown"


def device_info(device: str) -> dict[str, str]:
    """What a result measured on ``device`` depends on: for the trial record, the card and bench headers."""
    import torch

    info = {"device": device, "torch": torch.__version__}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update({
            "gpu": props.name,
            "gpu_count": str(torch.cuda.device_count()),
            "gpu_memory_gib": f"{props.total_memory / 2**30:.1f}",
            "compute_capability": f"{props.major}.{props.minor}",
            "driver": _nvidia_smi("driver_version"),
            "cuda_runtime": str(torch.version.cuda),
            "cudnn": str(torch.backends.cudnn.version()),
            "bf16": str(bf16_supported("cuda")).lower(),
        })
    else:
        flags = cpu_flags()
        info.update({
            "cpu": cpu_model(),
            "cpu_flags": " ".join(f for f in CPU_FLAGS_OF_INTEREST if f in flags) or "none of interest",
            "cpus_usable": str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()),
            "torch_threads": str(torch.get_num_threads()),
            "bf16": str(bf16_supported("cpu")).lower(),
        })
    return info


# -- ONNX Runtime providers ---------------------------------------------------------------------------
def _installed(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def ort_available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def _probe_model() -> bytes:
    """A one-node ONNX model (Add), enough to see which provider a session really gets."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def session_providers(provider: str) -> list[str]:
    """The providers a real session asked for ``provider`` (with the CPU as fallback) ends up with."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # the fallback is reported by us in one line, not by ORT's log
    # ORT's own "provider not available" warning; only this filter entry is undone afterwards (not
    # warnings.catch_warnings, which restores a copy of the whole list: a filter another thread added meanwhile would go)
    with ignored_warning(UserWarning):
        session = ort.InferenceSession(_probe_model(), options, providers=[provider, "CPUExecutionProvider"])
    return list(session.get_providers())


@functools.cache
def cuda_provider_problem() -> str | None:
    """None when ONNX Runtime can run on CUDA here; else one line saying why not."""
    genai_cuda = _installed("onnxruntime-genai-cuda")
    ort_gpu = _installed("onnxruntime-gpu")
    available = ort_available_providers()
    if "CUDAExecutionProvider" not in available or genai_cuda is None:
        missing = [name for name, version in (("onnxruntime-gpu", ort_gpu), ("onnxruntime-genai-cuda", genai_cuda)) if version is None]
        what = f"{' and '.join(missing)} not installed" if missing else "onnxruntime lists no CUDAExecutionProvider"
        return f"CUDAExecutionProvider needs {GPU_EXTRA}; {what} (available providers: {', '.join(available)})"
    # onnxruntime-gpu lists CUDA whenever it was built with it, even when its CUDA/cuDNN libraries do
    # not load on this machine; a session then falls back to the CPU without an error. Try one.
    if session_providers("CUDAExecutionProvider")[0] != "CUDAExecutionProvider":
        try:
            from onnxruntime.capi import build_and_package_info as build

            wants = f"CUDA {getattr(build, 'cuda_version', '?')}, cuDNN {getattr(build, 'cudnn_version', '?')}"
        except ImportError:
            wants = "its CUDA/cuDNN"
        return (f"onnxruntime-gpu {ort_gpu} lists CUDAExecutionProvider but a session falls back to the CPU: it needs {wants} "
                "libraries that do not load here (compare with nvidia-smi; see docs/gpu.md)")
    return None


def provider_platform_problem(provider: str) -> str | None:
    """Why ``provider`` cannot be used on this operating system, or None. DirectML exists on Windows only,
    and autotune does not run on Windows: its cache locks (fcntl), memory probes (/proc, resource) and
    worker checks (/proc, os.kill) are POSIX/Linux code with no Windows counterpart yet."""
    if provider != "DmlExecutionProvider":
        return None
    if sys.platform != "win32" and os.name != "nt":
        return (f"the DirectML provider (DmlExecutionProvider) runs on Windows only, this system is {sys.platform}; use "
                "CPUExecutionProvider or CUDAExecutionProvider")
    return ("the DirectML provider (DmlExecutionProvider) needs Windows, where autotune does not run yet (its cache locks "
            "use fcntl, its memory probes /proc and resource); use CPUExecutionProvider or CUDAExecutionProvider on Linux")


def check_provider(provider: str, where: str = "engine.execution_providers") -> None:
    """Refuse a provider the installed ONNX Runtime packages cannot serve on this machine (one line)."""
    if provider == "CUDAExecutionProvider":
        problem = cuda_provider_problem()
        if problem:
            raise ConfigError(where, problem)


def record_peak_memory(device: str) -> dict[str, Any]:
    """Peak memory of the training so far: GPU allocator peak on CUDA (cheap, exact); nothing on CPU
    (the process's ru_maxrss includes everything before the pass, so it would mislead)."""
    if device != "cuda":
        return {}
    import torch

    return {"gpu_peak_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1),
            "gpu_peak_reserved_mib": round(torch.cuda.max_memory_reserved() / 2**20, 1)}


def release_memory() -> None:
    """Hand back what a pass that just ran left behind, before the next one starts.

    Passes run in this process, one after the other. A pass's models are held by reference cycles
    (the training callback's closure and peft's wrappers hold the trained model; the builder's ONNX
    graph holds the weights it read), which only a full collection frees; and glibc keeps freed heap
    pages (the training activations) resident until told to return them. Without both, the trained
    model and the training heap (1.3 GB for SmolLM2-135M) stayed resident under the merge and the
    build, whose own peaks stacked on top: 2.62 GB where the LoRA pass alone peaks at 2.23 GB.
    Costs ~0.35 s (the full collection).
    """
    gc.collect()
    torch = sys.modules.get("torch")  # only if a pass imported it (importing it here would cost, not free)
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()  # cached GPU blocks of a GPU training, back to the driver
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Any:
    """glibc's malloc_trim, or None (another libc, another OS: nothing to call)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # musl and others have no libc.so.6 / no malloc_trim
        return None
