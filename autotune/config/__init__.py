"""Config: the canonical schema, converters for older shapes, and the loader."""

from autotune.config.loader import load_config
from autotune.config.schema import RunConfig

__all__ = ["RunConfig", "load_config"]
