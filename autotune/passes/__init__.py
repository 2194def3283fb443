"""Built-in passes; importing this package registers them."""

from autotune.passes import drop_layers, int4, lora, merge, model_builder, ort_quantize, qlora  # noqa: F401
from autotune.passes.base import PASS_REGISTRY, Pass, PassParams, get_pass, register_pass

__all__ = ["PASS_REGISTRY", "Pass", "PassParams", "get_pass", "register_pass"]
