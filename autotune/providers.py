"""One table of the execution providers autotune targets: the ONNX Runtime name, the model builder's
``execution_provider`` and onnxruntime-genai's provider name."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PROVIDERS", "Provider", "provider"]


@dataclass(frozen=True)
class Provider:
    ort_name: str  # ONNX Runtime's name, as in the config's execution_providers
    builder: str  # onnxruntime-genai model builder's execution_provider
    genai: str | None  # onnxruntime-genai Config.append_provider name (None: the CPU default)
    short: str  # for logs and file names


PROVIDERS: dict[str, Provider] = {
    p.ort_name: p
    for p in (
        Provider("CPUExecutionProvider", "cpu", None, "cpu"),
        Provider("CUDAExecutionProvider", "cuda", "cuda", "cuda"),
        Provider("DmlExecutionProvider", "dml", "dml", "dml"),
    )
}


def provider(name: str) -> Provider:
    """The table row for an ONNX Runtime provider name (KeyError for an unknown one)."""
    return PROVIDERS[name]
