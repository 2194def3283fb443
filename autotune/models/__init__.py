"""Model handles, GGUF import and the demo model."""

from autotune.models.handle import ModelHandle

__all__ = ["ModelHandle"]
