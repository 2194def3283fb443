"""Early stopping and multi-fidelity with the grid sampler (issue 28 item 10): off unless the config sets
them, and settings written without ``enabled`` set them (they apply, as with every other sampler)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from autotune.config.schema import EngineConfig
from autotune.search.study import Study


def rule(sampler: str, key: str, setting: dict[str, Any] | None) -> Any:
    """The rule a study of ``sampler`` applies for ``search_strategy.<key>`` (None: off)."""
    strategy: dict[str, Any] = {"sampler": sampler}
    if setting is not None:
        strategy[key] = setting
    engine = EngineConfig.model_validate({"search_strategy": strategy})
    grid = [{}] if sampler == "grid" else None  # a grid study holds its points
    return Study._opt_out_rule(SimpleNamespace(grid=grid), getattr(engine.search_strategy, key))


@pytest.mark.parametrize(("key", "setting", "value"), [
    ("multi_fidelity", {"first_rows": 0.5}, ("first_rows", 0.5)),
    ("early_stop", {"warmup_steps": 5, "margin": 0.1}, ("margin", 0.1)),
])
def test_settings_without_enabled_apply_with_the_grid_as_with_other_samplers(key: str, setting: dict[str, Any],
                                                                             value: tuple[str, Any]) -> None:
    for sampler in ("grid", "tpe"):
        applied = rule(sampler, key, setting)
        assert applied is not None and getattr(applied, value[0]) == value[1], sampler
    assert rule("grid", key, None) is None and rule("grid", key, {}) is None  # nothing set: off for the grid
    assert rule("tpe", key, None) is not None  # on by default elsewhere
    assert rule("grid", key, {**setting, "enabled": False}) is None  # enabled: false wins
