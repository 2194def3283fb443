"""The resume check at unit level (an in-memory study, no trial run): evaluator versions are in the
fingerprint, fixed pass settings are compared over the keys of both sides, and a study stored before
fingerprints adopts one built from its stored run config (issue 28 items 7-9)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest

from autotune.config_checks import load_config
from autotune.errors import ConfigError
from autotune.evaluation.accuracy import AccuracyMetricType
from autotune.records import DataSummary, StudyFingerprint, StudyMeta, write_meta
from autotune.run_context import RunContext
from autotune.search import fingerprint as fingerprint_module
from autotune.search.fingerprint import check_resume, study_fingerprint
from autotune.search.study import stored_config
from tests.conftest import TONES, tiny_config


@pytest.fixture()
def make(tmp_path: Path) -> Any:
    """``make(**changes)`` -> (config, fingerprint): a grid over the builder's precision, scored by accuracy."""
    (tmp_path / "model").mkdir()
    data = tmp_path / "tones.jsonl"
    data.write_text("".join(line + "\n" for line in TONES.read_text().splitlines()[:60]))

    def build(*, block_size: Any = 32, eval_dataset_size: int = 20) -> tuple[Any, StudyFingerprint]:
        raw = tiny_config(tmp_path / "model", data, tmp_path)
        raw["data_configs"][0]["eval_dataset_size"] = eval_dataset_size
        raw["passes"] = {"build": {"type": "ModelBuilder", "precision": ["int4", "fp32"], "block_size": block_size}}
        raw["evaluators"] = {"acc": {"metrics": [{"name": "accuracy", "type": "accuracy", "sub_types": [{"name": "accuracy"}]}]}}
        raw["engine"].update({"evaluator": "acc", "search_strategy": {"sampler": "grid"}})
        config = load_config(raw)
        ctx = RunContext(config)
        ctx.pipeline.data("tones")  # what the preflight loads
        return config, study_fingerprint(ctx)

    return build


def stored_study(config: Any, fingerprint: StudyFingerprint, *, kept: bool = True) -> Any:
    """An in-memory search study with one finished trial and the meta a run of ``config`` stored: with
    its fingerprint, or (``kept`` false) as an autotune before fingerprints stored it."""
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, study_name="s")
    study.add_trial(optuna.trial.create_trial(value=1.0))
    rows = fingerprint.data["tones"]
    data = {"tones": DataSummary(train=rows["train"]["rows"], validation=rows["validation"]["rows"], test=rows["test"]["rows"])}
    write_meta(study, StudyMeta(mode="search", config=stored_config(config), fingerprint=fingerprint if kept else None,
                                data=data))
    return storage


def refusal(storage: Any, current: StudyFingerprint, config: Any) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        check_resume(storage, "s", current, config=config)
    assert "set engine.study_name, or another engine.output_dir" in caught.value.message
    return caught.value


def test_the_fingerprint_holds_the_evaluator_versions_and_a_changed_one_is_refused(
        make: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    config, fingerprint = make()
    assert fingerprint.evaluator["versions"] == {"evaluation": 1, "types": {"accuracy": AccuracyMetricType.version}}
    storage = stored_study(config, fingerprint)
    assert check_resume(storage, "s", fingerprint, config=config) == fingerprint  # unchanged: resumes

    monkeypatch.setattr(AccuracyMetricType, "version", AccuracyMetricType.version + 1)  # the accuracy evaluator changed
    error = refusal(storage, make()[1], config)
    assert error.where == "evaluators.acc.metrics[0].type"
    assert f"scored by metric type accuracy version {AccuracyMetricType.version - 1}, this autotune's is version " \
           f"{AccuracyMetricType.version}" in error.message
    monkeypatch.undo()
    monkeypatch.setattr(fingerprint_module, "EVALUATION_VERSION", 2)  # the evaluation's layout changed
    error = refusal(storage, make()[1], config)
    assert error.where == "evaluators.acc" and "scored by evaluation version 1, this autotune's is 2" in error.message


def test_a_fingerprint_written_before_versions_were_kept_resumes_without_claiming_them(make: Any) -> None:
    config, fingerprint = make()
    old = fingerprint.model_copy(update={"evaluator": {k: v for k, v in fingerprint.evaluator.items() if k != "versions"}})
    kept = check_resume(stored_study(config, old), "s", fingerprint, config=config)
    assert kept == old  # the versions that scored its trials are unknown: not stored as if they were this run's


@pytest.mark.parametrize(("then", "now", "words"), [
    (32, [16, 64], "the study's trials ran with it fixed at 32, this config does not fix it"),
    ([16, 32], 32, "the study's trials ran without it fixed (searched, or not a setting then), this config fixes it at 32"),
], ids=["fixed-then-searched-now", "searched-then-fixed-now"])
def test_a_fixed_setting_on_one_side_only_is_refused(make: Any, then: Any, now: Any, words: str) -> None:
    old_config, old = make(block_size=then)
    config, current = make(block_size=now)
    error = refusal(stored_study(old_config, old), current, config)
    assert error.where == "passes.build.block_size" and words in error.message


def test_a_setting_fixed_then_and_searched_now_over_its_old_value_is_a_grid_that_grew(make: Any) -> None:
    old_config, old = make(block_size=32)
    config, current = make(block_size=[16, 32])  # the old trials are the new grid's points at 32
    assert check_resume(stored_study(old_config, old), "s", current, config=config) == current


def test_a_new_setting_whose_default_is_null_reads_as_absent_in_an_older_fingerprint(make: Any) -> None:
    config, current = make()
    old = current.model_copy(deep=True)
    old.passes["build"]["fixed"].pop("nodes_to_exclude")  # null by default: as if the option came later
    assert current.passes["build"]["fixed"]["nodes_to_exclude"] is None
    assert check_resume(stored_study(config, old), "s", current, config=config) == current


def test_a_study_without_a_fingerprint_adopts_one_built_from_its_stored_run_config(make: Any) -> None:
    old_config, old = make(block_size=16)
    config, current = make()
    error = refusal(stored_study(old_config, old, kept=False), current, config)  # today's config is not what its trials ran
    assert error.where == "passes.build.block_size" and "the study's trials ran with 16, this config has 32" in error.message

    fewer_config, fewer = make(eval_dataset_size=10)
    error = refusal(stored_study(config, current, kept=False), fewer, fewer_config)
    assert error.where == "data_configs[0].eval_dataset_size"
    assert "the study's trials were scored with 20.0, this config has 10.0" in error.message

    grown = current.model_copy(deep=True)
    grown.data["tones"]["validation"]["rows"] = 30  # the meta kept 20 validation rows: the data file changed since
    error = refusal(stored_study(config, grown, kept=False), current, config)
    assert error.where == "data_configs[0]" and "its validation split differs (30 rows then, 20 now" in error.message

    adopted = check_resume(stored_study(config, current, kept=False), "s", current, config=config)
    assert adopted.passes == current.passes and adopted.data == current.data and adopted.models is None
    assert adopted.evaluator == {k: v for k, v in current.evaluator.items() if k != "versions"}  # unknown: left out


def test_a_study_without_a_fingerprint_whose_stored_config_does_not_read_back_is_refused(make: Any) -> None:
    config, current = make()
    storage = stored_study(config, current, kept=False)
    study = optuna.load_study(study_name="s", storage=storage)
    meta = json.loads(json.dumps(study.user_attrs["autotune_meta"]))
    meta["config"]["passes"]["build"]["type"] = "RetiredPass"
    study.set_user_attr("autotune_meta", meta)
    error = refusal(storage, current, config)
    assert error.where == "engine.study_name" and "its stored run config does not read back" in error.message
    assert "RetiredPass" in error.message
    assert "\n" not in str(error)
