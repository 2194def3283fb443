"""Measure once per graph (issue 31 items 1 and 2): the structure key of a built model ignores its weights'
values and nothing else, trials of one structure carry one latency and memory measurement (in the study and
after it, when the Pareto set is re-measured), and accuracy is never shared."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

import autotune
from autotune.evaluation.structure import structure_key
from autotune.testing import make_tiny_llama
from tests.search.test_study import study_config

CPU = "CPUExecutionProvider"


@pytest.fixture(scope="module")
def builds(tiny_model: Path, tone_rows: list[dict[str, str]], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny Llama and another of the same shape (other weights), built in several ways."""
    from autotune.passes.model_builder import ModelBuilderParams, build_onnx

    root = tmp_path_factory.mktemp("structures")
    other = make_tiny_llama(root / "other", [r["phrase"] for r in tone_rows], seed=1)
    out = {}
    for name, model, params in (("a-int4-32", tiny_model, ModelBuilderParams(precision="int4", block_size=32)),
                                ("b-int4-32", other, ModelBuilderParams(precision="int4", block_size=32)),
                                ("b-int4-16", other, ModelBuilderParams(precision="int4", block_size=16)),
                                ("a-fp32", tiny_model, ModelBuilderParams(precision="fp32")),
                                ("b-fp32", other, ModelBuilderParams(precision="fp32"))):
        build_onnx(model, root / name, params, provider=CPU, work_dir=root / f"work-{name}")
        out[name] = root / name
    return out


def test_the_structure_key_ignores_weight_values_only(builds: dict[str, Path]) -> None:
    key = {name: structure_key(path, provider=CPU) for name, path in builds.items()}
    assert key["a-int4-32"] == key["b-int4-32"]  # two models of one shape built alike
    assert key["a-fp32"] == key["b-fp32"]
    assert key["b-int4-16"] != key["b-int4-32"]  # another block size
    assert key["a-fp32"] != key["a-int4-32"]  # another precision
    assert structure_key(builds["a-int4-32"], provider="CUDAExecutionProvider") != key["a-int4-32"]  # another provider
    assert structure_key(builds["a-int4-32"], provider=CPU, session={"threads": 1}) != key["a-int4-32"]  # other session options
    config = json.loads((builds["b-int4-32"] / "genai_config.json").read_text())
    config["search"]["max_length"] = int(config["search"]["max_length"]) // 2
    (builds["b-int4-32"] / "genai_config.json").write_text(json.dumps(config))
    assert structure_key(builds["b-int4-32"], provider=CPU) != key["a-int4-32"]  # other search settings


def test_trials_of_one_structure_share_one_latency_measurement_and_never_accuracy(tmp_path: Path, tiny_model: Path,
                                                                                  tone_file: Path) -> None:
    config = study_config(tiny_model, tone_file, tmp_path)
    config["passes"]["lora"]["r"] = [2, 4]  # two fine-tunes of one shape: their int4 builds have one structure
    config["passes"]["build"]["precision"] = "int4"
    config["evaluators"]["tiny"] = copy.deepcopy(config["evaluators"]["tiny"])
    config["evaluators"]["tiny"]["metrics"][2]["user_config"]["memory"] = True
    config["engine"]["selection"]["remeasure_rounds"] = 2
    autotune.run(config)
    import pandas as pd

    trials = pd.read_csv(tmp_path / "out" / "trials.csv")
    assert len(trials) == 2 and trials["structure_key"].nunique() == 1 and trials["structure_key"].notna().all()
    assert trials["model_key"].nunique() == 2
    latency = "latency-decode_ms_per_token_p50"
    assert trials[latency].nunique() == 1  # one measurement (re-measured once per structure too)
    assert trials["footprint-size_mb"].nunique() == 1
    from autotune.records import StudyView
    from tests.search.test_study import load

    view = StudyView.load(load(tmp_path))
    first = [r.metrics[latency] for r in view.records]
    assert first[0].value == first[1].value and first[0].details["measured_on"] == first[1].details["measured_on"]
    again = [r.remeasured[latency] for r in view.records]
    assert again[0].details["rounds"] == again[1].details["rounds"]  # the baseline (fp32) is the other structure
    assert view.baseline[latency].details["structure_key"] != first[0].details["structure_key"]
    report = (tmp_path / "out" / "report.html").read_text()
    assert 'id="shared-measurements"' in report and "trials 0, 1: structure" in report
    # Accuracy is each model's own, so the less accurate model of one graph is never on the Pareto set.
    pareto = pd.read_csv(tmp_path / "out" / "pareto.csv")
    assert (pareto.groupby("structure_key")["accuracy-accuracy"].nunique() == 1).all()
    assert pareto["accuracy-accuracy"].max() == trials["accuracy-accuracy"].max()


def test_two_readings_of_one_structure_cannot_put_its_less_accurate_model_on_the_pareto_set() -> None:
    """The defect issue 31 measured: a rounding-int4 trial 11 points less accurate than its twin graph's, on the
    Pareto set because its latency read 18 % lower. Within a structure only the other objectives count."""
    from autotune.records import MetricValue, ObjectiveSpec, StudyMeta, StudyView, TrialRecord
    from autotune.selection import pareto_set
    from autotune.selection.pareto import remeasure_candidates

    objectives = [ObjectiveSpec(metric="acc", higher_is_better=True, kind="accuracy"),
                  ObjectiveSpec(metric="lat", higher_is_better=False, kind="latency")]

    def trial(number: int, acc: float, lat: float, structure: str) -> TrialRecord:
        latency = MetricValue(value=lat, unit="ms/token", higher_is_better=False, name="lat", details={"structure_key": structure})
        return TrialRecord(number=number, state="COMPLETE", feasible=True, objectives={"acc": acc, "lat": lat},
                           metrics={"acc": MetricValue(value=acc, name="acc"), "lat": latency})

    records = [trial(0, 0.825, 10.0, "int4"), trial(1, 0.715, 8.2, "int4"), trial(2, 0.84, 40.0, "fp32")]
    view = StudyView("s", StudyMeta(mode="search", objectives=objectives), records)
    assert [r.number for r in pareto_set(view)] == [0, 2]
    assert 1 not in [r.number for r in remeasure_candidates(view)]
    records[1].metrics["lat"].details["structure_key"] = "another"  # another graph: its own speed may earn a place
    assert [r.number for r in pareto_set(view)] == [0, 1, 2]
