"""One flow: a single run is a study of one point; the stored schema; choices the study refuses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

import autotune
from autotune.cli import app
from autotune.records import RECORD_ATTR, read_meta
from tests.conftest import tiny_config
from tests.fault_passes import FaultInjection  # noqa: F401  (registers the test-only pass)
from tests.search.test_study import EVALUATOR, study_config

RESULT_FILES = {"study.db", "best", "trials.csv", "trials.parquet", "pareto.csv", "selection.json", "report.html",
                "pareto.png", "history.png"}


def test_a_single_run_and_a_one_point_study_write_the_same_files(tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    study = study_config(tiny_model, tone_file, tmp_path / "study")
    study["passes"]["lora"]["r"] = 2
    study["passes"]["build"]["precision"] = "int4"
    single = json.loads(json.dumps(study).replace(str(tmp_path / "study"), str(tmp_path / "single")))
    single["engine"]["search_strategy"] = False
    one_point = autotune.run(study)
    run_once = autotune.run(single)

    searched = {p.name for p in (tmp_path / "study" / "out").iterdir()}
    ran = {p.name for p in (tmp_path / "single" / "out").iterdir()}
    assert searched >= RESULT_FILES and ran >= RESULT_FILES
    assert ran - searched == {"model", "run.json", "metrics.json"}  # kept for single-run users
    assert len(one_point.trials) == len(run_once.trials) == 1
    assert list(one_point.trials.columns) == list(run_once.trials.columns)
    assert run_once.record is not None and one_point.record is not None
    assert run_once.record.model_key == one_point.record.model_key  # same point, same model
    assert run_once.record.metrics.keys() == one_point.record.metrics.keys()
    assert (tmp_path / "single" / "out" / "best" / "model_card.json").is_file()
    assert json.loads((tmp_path / "single" / "out" / "run.json").read_text())["model_key"] == run_once.record.model_key

    again = autotune.run(single)  # unchanged: its stored result stands (issue 22 item 4), still one trial
    assert len(again.trials) == 1 and again.record is not None and again.record.model_key == run_once.record.model_key


def test_a_single_run_never_replaces_a_search_study_in_its_place(tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    study = study_config(tiny_model, tone_file, tmp_path)
    study["passes"]["lora"]["r"] = 2
    study["passes"]["build"]["precision"] = "int4"
    autotune.run(study)
    single = json.loads(json.dumps(study))
    single["engine"]["search_strategy"] = False
    with pytest.raises(autotune.ConfigError, match="engine.output_dir"):
        autotune.run(single)
    assert len(optuna.load_study(study_name="out", storage=f"sqlite:///{tmp_path / 'out' / 'study.db'}").trials) == 1


def test_a_study_written_by_the_previous_schema_opens(tmp_path: Path) -> None:
    """A study.db of schema 1 (separate attributes, as autotune 0.1 wrote them) reports and selects."""
    from tests.report.test_html_report import BOUNDS, make_study

    memory = make_study(BOUNDS)
    out = tmp_path / "old"
    out.mkdir()
    storage = f"sqlite:///{out / 'study.db'}"
    optuna.copy_study(from_study_name=memory.study_name, from_storage=memory._storage, to_storage=storage, to_study_name="old")
    meta = read_meta(optuna.load_study(study_name="old", storage=storage))
    assert meta.schema_version == 1 and [o.kind for o in meta.objectives] == ["accuracy", "latency", "size"]
    result = CliRunner().invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "selection.json").read_text())["trial"] == 4
    result = CliRunner().invoke(app, ["trials", str(out)])
    assert result.exit_code == 0 and "FAIL" in result.output


def test_the_latency_budget_applies_to_the_latency_objective_and_never_to_size(tmp_path: Path) -> None:
    from autotune.errors import ConfigError
    from autotune.records import ObjectiveSpec, StudyMeta, StudyView, TrialRecord
    from autotune.selection import select

    records = [TrialRecord(number=i, state="COMPLETE", objectives={"accuracy-accuracy": a, "footprint-size_mb": s}, feasible=True)
               for i, (a, s) in enumerate([(0.9, 500.0), (0.8, 5.0)])]
    meta = StudyMeta(objectives=[ObjectiveSpec(metric="accuracy-accuracy", higher_is_better=True, kind="accuracy"),
                                 ObjectiveSpec(metric="footprint-size_mb", higher_is_better=False, unit="MB", kind="size")])
    view = StudyView("s", meta, records)
    assert select(view).record.number == 0  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="latency_budget_ms: the study has no latency objective"):
        select(view, latency_budget_ms=10)  # the old code filtered on size here and chose trial 1

    config = study_config(Path("m"), Path("d"), tmp_path)  # refused before any trial: nothing is loaded
    config["evaluators"]["tiny"]["metrics"] = [EVALUATOR["metrics"][0], {**EVALUATOR["metrics"][2], "sub_types": [
        {"name": "size_mb", "priority": 2}]}]
    config["engine"]["selection"] = {"latency_budget_ms": 10}
    with pytest.raises(ConfigError, match="engine.selection.latency_budget_ms"):
        autotune.run(config)


def test_a_failed_trial_keeps_its_traceback_in_a_log_the_record_and_report_name(
        tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    config = study_config(tiny_model, tone_file, tmp_path)
    config["passes"] = {"fault": {"type": "FaultInjection", "fail": [True]}, "build": {"type": "ModelBuilder", "precision": "int4"}}
    autotune.run(config)
    trial = optuna.load_study(study_name="out", storage=f"sqlite:///{tmp_path / 'out' / 'study.db'}").trials[0]
    record = trial.user_attrs[RECORD_ATTR]
    log = Path(record["log_file"])
    assert log.is_file() and log.parent == tmp_path / "out" / "logs"
    text = log.read_text()
    assert text.startswith("Traceback") and "RuntimeError: injected fault" in text and "def run" not in text
    assert "fault_passes.py" in text  # the frame that raised, so a bug in autotune is told from a trial failure
    assert str(log) in (tmp_path / "out" / "report.html").read_text()


def test_select_rebuilds_an_evicted_model_or_changes_nothing(tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    from autotune.cache import Cache

    model = tmp_path / "model-copy"
    shutil.copytree(tiny_model, model)
    config = study_config(model, tone_file, tmp_path)
    config["passes"]["lora"]["r"] = 2
    config["passes"]["build"]["precision"] = "int4"
    out = tmp_path / "out"
    result = autotune.run(config)
    key = result.record.model_key  # type: ignore[union-attr]
    cache = Cache(tmp_path / "cache")
    shutil.rmtree(cache.entry(key))  # evicted
    assert CliRunner().invoke(app, ["select", str(out)]).exit_code == 0
    assert cache.get(key) is not None  # rebuilt from the study's config (the merged model was still cached)
    assert json.loads((out / "best" / "model_card.json").read_text())["model_key"] == key

    shutil.rmtree(tmp_path / "cache")
    shutil.rmtree(model)  # and now it cannot be rebuilt
    before = {p: p.stat().st_mtime_ns for p in [out / "selection.json", out / "best" / "model_card.json"]}
    result = CliRunner().invoke(app, ["select", str(out), "--policy", "knee"])
    assert result.exit_code == 2 and "best/ and selection.json are unchanged" in result.output
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_the_stored_config_never_holds_a_storage_password(tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    from autotune.config_checks import load_config
    from autotune.search.storage import redact_url
    from autotune.search.study import stored_config

    config = tiny_config(tiny_model, tone_file, tmp_path)
    config["engine"]["storage"] = "postgresql+psycopg2://tuner:s3cr@t-p@ss@db.example:5432/studies"
    stored = json.dumps(stored_config(load_config(config)))
    assert "s3cr" not in stored and "p@ss" not in stored and "tuner:***@db.example" in stored
    # The fallback for what sqlalchemy cannot parse hides everything up to the host, '@' in the password included.
    assert redact_url("weird://user:pa@ss@host/x") == "weird://user:***@host/x"


def test_opening_a_storage_refuses_the_users_url_in_one_line_and_keeps_a_library_error(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import optuna.storages

    from autotune.errors import ConfigError
    from autotune.search.storage import open_storage

    with pytest.raises(ConfigError, match=r"engine.storage: expected a storage URL"):
        open_storage("study.db")
    with pytest.raises(ConfigError, match=r"engine.storage: cannot open nosuchdb://"):
        open_storage("nosuchdb://x/y")
    with pytest.raises(ConfigError, match=r"cannot open sqlite:////nonexistent-dir/x/study.db"):
        open_storage("sqlite:////nonexistent-dir/x/study.db")

    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("a bug inside the storage library")

    monkeypatch.setattr(optuna.storages, "RDBStorage", broken)
    with pytest.raises(KeyError, match="a bug inside the storage library"):  # not turned into the user's mistake
        open_storage(f"sqlite:///{tmp_path / 'study.db'}")


def test_a_grid_that_grew_runs_its_new_points_and_evaluate_without_baseline_skips_relative_goals(
        tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    config = study_config(tiny_model, tone_file, tmp_path)
    config["passes"]["lora"]["r"] = 2
    config["passes"]["build"]["precision"] = ["int4", "fp32"]
    config["evaluators"]["tiny"]["metrics"][0]["sub_types"][0]["goal"] = {"type": "min-improvement", "value": 0.0}
    autotune.run(config)
    config["passes"]["build"]["accuracy_level"] = [0, 4]  # a parameter added to the grid: its new points run
    autotune.run(config)
    trials = optuna.load_study(study_name="out", storage=f"sqlite:///{tmp_path / 'out' / 'study.db'}").trials
    assert sorted(t.params.get("build.accuracy_level", -1) for t in trials) == [-1, -1, 0, 4]  # fp32 has no accuracy level
    assert all(t.state.name == "COMPLETE" for t in trials)
    config["passes"]["build"]["precision"] = ["int4", "fp32", "int8"]  # other values of a searched parameter
    with pytest.raises(autotune.ConfigError, match=r"passes.build.precision: study 'out' searched it over \[int4, fp32\]"):
        autotune.run(config)

    config["passes"]["build"]["precision"] = ["int4", "fp32"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    result = CliRunner().invoke(app, ["evaluate", "--config", str(path), "--model", str(tmp_path / "out" / "best"), "--no-baseline"])
    assert result.exit_code == 0, result.output
    assert "accuracy-accuracy" in result.output
