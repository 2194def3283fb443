"""Config: the canonical schema, converters for older shapes, and the parser (pure data: the checks
against passes, metric types and the model, and ``load_config``, are ``autotune.config_checks``)."""

from autotune.config.schema import RunConfig

__all__ = ["RunConfig"]
