"""A user's own metric: a Python function named in the config, no change to autotune needed.

```yaml
metrics:
  - name: brevity
    type: custom
    sub_types: [{name: mean_answer_chars, higher_is_better: false}]
    user_config: {function: my_metrics.py:mean_answer_chars, any: option}
```
The function is called as ``fn(model_dir: Path, data: autotune.data.Dataset | None, **options)``
and returns ``{sub_type_name: float}``.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ConfigDict

from autotune.errors import ConfigError
from autotune.evaluation.base import (
    EvalContext,
    EvalModel,
    Metric,
    MetricType,
    MetricTypeParams,
    deprecated_names,
    register_metric_type,
)


class CustomParams(MetricTypeParams):
    model_config = ConfigDict(extra="allow")
    function: str


def load_function(spec: str, *, base: Path, where: str) -> Callable[..., dict[str, float]]:
    target, _, name = spec.rpartition(":")
    if not target or not name:
        raise ConfigError(where, f"expected 'module:function' or 'file.py:function', got \"{spec}\"")
    try:
        if target.endswith(".py"):
            path = Path(target) if Path(target).is_absolute() else base / target
            if not path.is_file():
                raise ConfigError(where, f"no such file: {path}")
            module_spec = importlib.util.spec_from_file_location(f"autotune_user_{path.stem}", path)
            assert module_spec and module_spec.loader
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except ImportError as exc:
        raise ConfigError(where, f"cannot import {target}: {exc}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ConfigError(where, f"{target} has no function '{name}'")
    return fn


@register_metric_type("user")
class CustomMetricType(MetricType):
    type_name = "custom"
    Params = CustomParams

    def evaluate(self, model: EvalModel, params: Any, ctx: EvalContext) -> dict[str, Metric]:
        # The sub-types are the config's own (ctx.sub_types: no unit, the configured direction).
        fn = load_function(params.function, base=ctx.base_dir, where="user_config.function")
        options = {k: v for k, v in params.model_dump().items() if k != "function"}
        values = fn(model.path, ctx.data, **options)
        return {name: self.metric(name, value, ctx) for name, value in values.items()}


__getattr__ = deprecated_names(__name__, {"CustomEvaluator": "CustomMetricType"}, globals())  # the 0.1 name, for one release
