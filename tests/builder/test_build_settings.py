"""The builder's own fp32 settings (autotune.builder.build.FP32, the int4 passes' fp32 source) build what the
ModelBuilder pass's ``precision: fp32`` builds: the same precision and no extra option."""

from __future__ import annotations

from autotune.builder.build import FP32
from autotune.passes.model_builder import ModelBuilderParams


def test_the_builders_fp32_is_the_model_builder_passs_fp32() -> None:
    params = ModelBuilderParams(precision="fp32")
    assert (FP32.precision, FP32.extra_options()) == (params.precision, params.extra_options()) == ("fp32", [])
