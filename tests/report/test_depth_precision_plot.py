"""The Pareto plot tells depth (colour) and precision (marker shape) apart when a study searches them."""

from __future__ import annotations

from autotune.records import PassSummary, TrialRecord
from autotune.report.plots import PRECISION_MARKERS, _variant_styles, variant


def ran(name: str, type_name: str) -> PassSummary:
    return PassSummary(name=name, type=type_name, key=name, seconds=1.0, cache_hit=False)


def trial(number: int, n_drop: int, precision: str) -> TrialRecord:
    return TrialRecord(number=number, state="COMPLETE", params={"depth": {"n_drop": n_drop}, "lora": {"r": 8},
                                                                 "build": {"precision": precision}},
                       passes=[ran("depth", "DropLayers"), ran("lora", "LoRA"), ran("build", "ModelBuilder")])


def test_colour_follows_the_blocks_dropped_and_shape_the_precision() -> None:
    done = [trial(i, d, p) for i, (d, p) in enumerate((d, p) for d in (0, 6, 12) for p in ("int4", "int8"))]
    styles = _variant_styles(done)
    assert styles is not None
    colours = {variant(r)[0]: styles[r.number][0] for r in done}
    assert len(set(colours.values())) == 3  # one colour per depth
    assert all(styles[r.number][1] == PRECISION_MARKERS[variant(r)[1] or ""] for r in done)
    assert {styles[0][1], styles[1][1]} == {"^", "s"}  # int4 and int8 differ in shape


def test_a_study_of_one_depth_and_one_precision_keeps_the_plain_style() -> None:
    assert _variant_styles([trial(0, 0, "int4"), trial(1, 0, "int4")]) is None


def test_a_quantizer_after_an_fp32_build_names_the_precision() -> None:
    record = trial(0, 6, "fp32")
    record.passes = [ran("depth", "DropLayers"), ran("build", "ModelBuilder"), ran("quant", "OnnxGptqQuantization")]
    assert variant(record) == (6, "int4")
