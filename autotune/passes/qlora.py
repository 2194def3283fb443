"""QLoRA: the base loaded in 4-bit through bitsandbytes, LoRA trained on top (same training as LoRA).

The adapter remembers its 4-bit base settings (``autotune_adapter.json``) so that merging happens
into the *dequantized* base at full precision: the weights the adapter was trained against, without
the loss of re-quantizing merged weights.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, ClassVar, Literal

from autotune.context import PassContext
from autotune.errors import ConfigError
from autotune.models.handle import ModelHandle
from autotune.passes.base import register_pass, searchable
from autotune.passes.lora import LoRA, LoRAParams, train_adapter

ADAPTER_META = "autotune_adapter.json"


class QLoRAParams(LoRAParams):
    ALIASES: ClassVar[dict[str, str]] = {**LoRAParams.ALIASES, "bnb_4bit_quant_type": "quant_type",
                                         "bnb_4bit_use_double_quant": "double_quant", "bnb_4bit_compute_dtype": "compute_dtype"}

    quant_type: Literal["nf4", "fp4"] = searchable("nf4", space=["nf4", "fp4"])
    double_quant: bool = searchable(True, space=[True, False])
    compute_dtype: Literal["float32", "bfloat16", "float16"] = "float32"

    def bnb_config(self) -> dict[str, Any]:
        return {"load_in_4bit": True, "bnb_4bit_quant_type": self.quant_type,
                "bnb_4bit_use_double_quant": self.double_quant, "bnb_4bit_compute_dtype": self.compute_dtype}


# What a backend that cannot do 4-bit here raises (no kernel for this device, a library that does not
# load); anything else (a TypeError, a ValueError...) is an unexpected library error and keeps its type.
NOT_SUPPORTED_ERRORS = (NotImplementedError, RuntimeError, OSError, ImportError)


@functools.cache
def four_bit_support(device: str | None = None) -> str | None:
    """None when bitsandbytes can quantize, dequantize and multiply in 4-bit on ``device`` (default:
    where ``engine.device: auto`` trains); else why not, in one line."""
    try:
        import bitsandbytes as bnb
        import torch
    except ImportError as exc:
        return f"bitsandbytes is not installed ({exc.name}); install the [qlora] extra"
    if device is None:
        from autotune.device import resolve_device

        device = resolve_device("auto")
    try:
        weight = torch.randn(64, 64, device=device)
        packed, state = bnb.functional.quantize_4bit(weight, quant_type="nf4")
        restored = bnb.functional.dequantize_4bit(packed, state)
        out = bnb.matmul_4bit(torch.randn(2, 64, device=device), packed.t(), quant_state=state)
        if out.shape != (2, 64) or restored.shape != weight.shape:
            return f"bitsandbytes 4-bit kernels returned wrong shapes on {device}"
    except NOT_SUPPORTED_ERRORS as exc:
        return f"bitsandbytes 4-bit kernels do not run on {device} ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
    return None


def bnb_quantization_config(settings: dict[str, Any]) -> Any:
    import torch
    from transformers import BitsAndBytesConfig

    values = dict(settings)
    values["bnb_4bit_compute_dtype"] = getattr(torch, values["bnb_4bit_compute_dtype"])
    return BitsAndBytesConfig(**values)


@register_pass("qlora")
class QLoRA(LoRA):
    """LoRA over a 4-bit base: LoRA's inputs, outputs, device key (bitsandbytes' CPU and CUDA kernels
    differ too) and checks, plus 4-bit support here."""

    probes_precision = False  # the probe would time an unquantized base

    type_name = "QLoRA"
    Params = QLoRAParams

    def check(self, params: QLoRAParams, *, provider: str, origin: str) -> None:  # type: ignore[override]
        super().check(params, provider=provider, origin=origin)
        reason = four_bit_support()
        if reason:
            where = origin.removesuffix(".config")
            raise ConfigError(f"{where}.type", f"QLoRA cannot run here: {reason}")

    def run(self, model: ModelHandle, params: QLoRAParams, ctx: PassContext, output: Path) -> None:  # type: ignore[override]
        settings = params.bnb_config()
        train_adapter(model, params, ctx, output, quantization_config=bnb_quantization_config(settings))
        # The device too: the merge dequantizes the base with the same (CPU or CUDA) kernels it trained on.
        meta = {"base_quantization": settings, "device": ctx.device}
        (output / ADAPTER_META).write_text(json.dumps(meta, indent=2))


def dequantized_base(path: Path, settings: dict[str, Any], *, trust_remote_code: bool = False, device: str = "cpu") -> Any:
    """The base as QLoRA saw it: loaded in 4-bit with ``settings`` on ``device``, then dequantized to
    fp32 on the CPU (where the merge runs: the merged fp32 model need not fit the GPU)."""
    import torch

    from autotune.models.loading import load_causal_lm

    on_gpu = device == "cuda" and torch.cuda.is_available()
    model = load_causal_lm(path, trust_remote_code=trust_remote_code, quantization_config=bnb_quantization_config(settings),
                           device_map={"": 0} if on_gpu else None)
    model = model.dequantize()
    return model.to(device="cpu", dtype=torch.float32)
