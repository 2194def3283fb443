"""Built-in passes; importing this package registers them."""

from autotune.passes import drop_layers, int4, lora, merge, model_builder, ort_quantize, qlora  # noqa: F401
from autotune.passes.base import PASS_REGISTRY, Pass, PassParams, register_pass

__all__ = ["PASS_REGISTRY", "Pass", "PassParams", "get_pass", "register_pass"]


def get_pass(type_name: str, *, path: str) -> type[Pass]:
    """The pass registered as ``type_name`` (any case; the built-ins are registered by this package's imports)."""
    return PASS_REGISTRY.lookup(type_name, where=path, what="pass type", label=lambda cls: cls.type_name)
