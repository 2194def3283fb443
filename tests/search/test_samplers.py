"""Every sampler the config accepts runs a real (tiny) study through ``autotune.run``.

The studies share one cache folder, so the two LoRA ranks are trained and the four ONNX models built
once; each study then costs its sampling and bookkeeping. The sampler in use is observed on Optuna's
own sampler classes (a spy on their constructors), not on autotune's internals.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import optuna
import pytest

import autotune
from tests.conftest import tiny_config

EVALUATOR = {"metrics": [
    {"name": "accuracy", "type": "accuracy", "sub_types": [{"name": "accuracy", "priority": 1}], "user_config": {"perplexity": False}},
    {"name": "footprint", "type": "footprint", "sub_types": [{"name": "size_mb", "priority": 2}], "user_config": {"memory": False}},
]}
SPACE = {("lora.r", 2), ("lora.r", 4), ("build.precision", "int4"), ("build.precision", "fp32")}
SAMPLER_CLASSES = ("TPESampler", "RandomSampler", "NSGAIISampler", "GPSampler", "GridSampler", "QMCSampler", "CmaEsSampler")


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, tone_rows: list[dict[str, str]]) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("samplers")
    data = root / "tones.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in tone_rows[:120]) + "\n")
    return {"root": root, "data": data, "model": tiny_model}


def sampler_config(shared: dict[str, Path], name: str, **search: Any) -> dict[str, Any]:
    config = tiny_config(shared["model"], shared["data"], shared["root"])
    config["passes"]["lora"]["r"] = [2, 4]
    config["passes"]["lora"]["training_args"]["max_steps"] = 2
    config["passes"]["build"]["precision"] = ["int4", "fp32"]
    config["data_configs"][0]["eval_dataset_size"] = 24
    config["evaluators"] = {"tiny": copy.deepcopy(EVALUATOR)}
    config["engine"].update({"evaluator": "tiny", "evaluate_input_model": False, "output_dir": str(shared["root"] / name),
                             "search_strategy": {"sampler": name.split("-")[0], "seed": 0, **search}})
    return config


@pytest.fixture()
def samplers_made(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The Optuna sampler class that each trial of the test's studies was sampled by (a sampler's
    ``before_trial`` runs once per trial on the study's own sampler; merely loading a study for a
    report constructs a default sampler that never samples)."""
    used: list[str] = []
    depth = [0]  # samplers delegate to inner ones (TPE's startup RandomSampler): keep the outermost only
    for cls_name in SAMPLER_CLASSES:
        cls = getattr(optuna.samplers, cls_name)
        real = cls.before_trial

        def spy(self: Any, study: Any, trial: Any, _real: Any = real, _name: str = cls_name) -> None:
            if depth[0] == 0:
                used.append(_name)
            depth[0] += 1
            try:
                _real(self, study, trial)
            finally:
                depth[0] -= 1

        monkeypatch.setattr(cls, "before_trial", spy)
    return used


def run_study(shared: dict[str, Path], name: str, **search: Any) -> tuple[autotune.StudyResult, optuna.Study]:
    result = autotune.run(sampler_config(shared, name, **search))
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{shared['root'] / name / 'study.db'}")
    return result, study


def assert_points_in_space(study: optuna.Study, n: int) -> None:
    trials = study.trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * n
    for trial in trials:
        assert set(trial.params.items()) <= SPACE and set(trial.params) == {"lora.r", "build.precision"}
        assert all(isinstance(v, float) for v in trial.values) and len(trial.values) == 2  # accuracy and size


@pytest.mark.parametrize(("sampler", "optuna_class"), [("tpe", "TPESampler"), ("random", "RandomSampler"),
                                                        ("nsga2", "NSGAIISampler"), ("gp", "GPSampler")])
def test_each_sampler_runs_a_real_study(shared: dict[str, Path], samplers_made: list[str], sampler: str, optuna_class: str) -> None:
    result, study = run_study(shared, sampler, max_samples=3)
    assert samplers_made == [optuna_class] * 3
    assert_points_in_space(study, 3)
    assert len(result.trials) == 3 and set(result.trials["state"]) == {"COMPLETE"}
    assert (shared["root"] / sampler / "best" / "genai_config.json").is_file()  # a model was selected and exported


def test_auto_takes_the_grid_when_the_space_fits_max_samples(shared: dict[str, Path], samplers_made: list[str]) -> None:
    _, study = run_study(shared, "auto-grid", max_samples=4)
    assert_points_in_space(study, 4)
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 4  # every point once, as the grid does
    assert len(samplers_made) == 4 and "TPESampler" not in samplers_made


def test_auto_takes_tpe_when_the_space_is_larger_than_max_samples(shared: dict[str, Path], samplers_made: list[str]) -> None:
    _, study = run_study(shared, "auto-tpe", max_samples=2)
    assert_points_in_space(study, 2)
    assert samplers_made == ["TPESampler"] * 2
