"""Built-in passes; importing this package registers them."""

from autotune.passes import (  # noqa: F401
    drop_layers,
    lora,
    merge,
    model_builder,
    onnx_blockwise_rtn_quantization,
    onnx_dynamic_quantization,
    onnx_gptq_quantization,
    onnx_hqq_quantization,
    onnx_mixed_precision_quantization,
    qlora,
)
from autotune.passes.base import PASS_REGISTRY, Pass, PassParams, register_pass

__all__ = ["PASS_REGISTRY", "Pass", "PassParams", "get_pass", "register_pass"]


def get_pass(type_name: str, *, path: str) -> type[Pass]:
    """The pass registered as ``type_name`` (any case; the built-ins are registered by this package's imports)."""
    return PASS_REGISTRY.lookup(type_name, where=path, what="pass type", label=lambda cls: cls.type_name)
