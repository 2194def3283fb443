"""The base model as a search dimension (issue 24 item 1): a list ``input_model`` of candidates the study
chooses among, each compared with its own baseline, cached per base, named in the trials table and the card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import optuna
import pytest
from typer.testing import CliRunner

from autotune.cli import app
from autotune.config_checks import load_config
from autotune.errors import ConfigError
from autotune.records import read_meta, read_record
from autotune.search.study import stored_config
from autotune.testing import make_tiny_llama
from tests.conftest import tiny_config

# Accuracy and size: no latency processes (the base dimension is what is tested, not the probe).
EVALUATOR = {"metrics": [
    {"name": "accuracy", "type": "accuracy", "sub_types": [{"name": "accuracy", "priority": 1}], "user_config": {"perplexity": False}},
    {"name": "footprint", "type": "footprint", "sub_types": [{"name": "size_mb", "priority": 2}], "user_config": {"memory": False}},
]}


def _model(folder: Path, texts: list[str], *, hub_id: str, **shape: Any) -> Path:
    make_tiny_llama(folder, texts, **shape)
    config = json.loads((folder / "config.json").read_text())
    config["_name_or_path"] = hub_id  # where the card's base_model comes from for a local folder
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory, tone_rows: list[dict[str, str]]) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("bases")
    texts = [r["phrase"] for r in tone_rows]
    return (_model(root / "tiny-a", texts, hub_id="test-org/tiny-a"),
            _model(root / "tiny-b", texts, hub_id="test-org/tiny-b", seed=1, num_hidden_layers=1))


def base_config(models: list[Any], data: Path, work: Path) -> dict[str, Any]:
    config = tiny_config(Path("unused"), data, work)
    config["input_model"] = models
    config["passes"] = {"drop": {"type": "DropLayers", "n_drop": 0},  # the identity: records its (empty) summary
                        **config["passes"]}
    config["passes"]["lora"]["r"] = 2
    config["passes"]["lora"]["training_args"]["max_steps"] = 2
    config["data_configs"][0]["eval_dataset_size"] = 24
    config["evaluators"] = {"tiny": json.loads(json.dumps(EVALUATOR))}
    # A goal relative to the baseline: resolved per base (a trial's bound is its own base's baseline + 1 MB).
    config["evaluators"]["tiny"]["metrics"][1]["sub_types"][0]["goal"] = {"type": "max-degradation", "value": 1.0}
    config["engine"].update({"evaluator": "tiny", "search_strategy": {"sampler": "grid", "seed": 0},
                             "pytorch_reference": False, "selection": {"remeasure_rounds": 0}})
    return config


def _write(config: dict[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(config))
    return path


def test_a_two_base_study_runs_caches_per_base_and_names_each_trials_base(
        tmp_path: Path, two_models: tuple[Path, Path], tone_file: Path) -> None:
    a, b = two_models
    config = base_config([{"model_path": str(a), "name": "a"}, {"model_path": str(b), "name": "b"}], tone_file, tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["run", "--config", str(_write(config, tmp_path / "study.json"))])
    assert result.exit_code == 0, result.output

    study = optuna.load_study(study_name="out", storage=f"sqlite:///{tmp_path / 'out' / 'study.db'}")
    records = [read_record(t) for t in study.trials]
    assert sorted(r.base for r in records) == ["a", "b"] and all(r.state == "COMPLETE" for r in records)
    assert all(r.point["input_model"] == r.base for r in records)  # a categorical parameter of the study
    keys = {r.base: {p.name: p.key for p in r.passes} for r in records}
    assert keys["a"]["lora"] != keys["b"]["lora"]  # each base fine-tuned on its own
    depth = next(p.name for p in records[0].passes if p.type == "DropLayers")
    assert all(r.summaries[depth] == {"n_drop": 0, "num_hidden_layers": n, "kept_layers": n, "dropped": []}
               for r, n in ((r, 2 if r.base == "a" else 1) for r in records))

    meta = read_meta(study)
    assert [x.name for x in meta.bases] == ["a", "b"]
    assert [x.model_id for x in meta.bases] == ["test-org/tiny-a", "test-org/tiny-b"]
    sizes = {name: baseline["footprint-size_mb"].value for name, baseline in meta.base_baselines.items()}
    assert set(sizes) == {"a", "b"} and sizes["a"] > sizes["b"]  # each base measured as itself (2 blocks vs 1)
    assert meta.baseline["footprint-size_mb"].value == sizes["a"]  # the default baseline is the first base's
    assert {name: bounds[0].value for name, bounds in meta.base_bounds.items()} == pytest.approx(
        {name: size + 1.0 for name, size in sizes.items()})
    for r in records:  # each trial's constraint is against its own base's bound
        size = r.metrics["footprint-size_mb"].value
        assert r.constraints["footprint-size_mb"] == pytest.approx(size - (sizes[r.base] + 1.0)) and r.feasible

    trials = (tmp_path / "out" / "trials.csv").read_text().splitlines()
    header = trials[0].split(",")
    assert "base" in header and "param.input_model" in header and "dropped_layers" in header
    assert sorted(line.split(",")[header.index("base")] for line in trials[1:]) == ["a", "b"]
    card = json.loads((tmp_path / "out" / "best" / "model_card.json").read_text())
    chosen = next(r for r in records if r.number == json.loads((tmp_path / "out" / "selection.json").read_text())["trial"])
    assert card["base"] == chosen.base and card["base_model"] == f"test-org/tiny-{chosen.base}"
    assert card["baseline"]["footprint-size_mb"]["value"] == sizes[chosen.base]  # compared with its own base's baseline
    assert f"base_model: test-org/tiny-{chosen.base}" in (tmp_path / "out" / "best" / "README.md").read_text()
    assert 'id="base-models"' in (tmp_path / "out" / "report.html").read_text()

    # Another study over the same cache: every pass of either base is a cache hit.
    again = json.loads(json.dumps(config).replace(str(tmp_path / "out"), str(tmp_path / "again")))
    result = runner.invoke(app, ["run", "--config", str(_write(again, tmp_path / "again.json"))])
    assert result.exit_code == 0, result.output
    rerun = optuna.load_study(study_name="again", storage=f"sqlite:///{tmp_path / 'again' / 'study.db'}")
    for record in map(read_record, rerun.trials):
        assert record.passes and all(p.cache_hit for p in record.passes), record.base
        assert {p.name: p.key for p in record.passes} == keys[record.base]

    # Resuming with another model under a candidate's name is refused before any work, naming the candidate.
    moved = tmp_path / "tiny-b-copy"
    shutil.copytree(b, moved)
    config["input_model"][1]["model_path"] = str(moved)
    result = runner.invoke(app, ["run", "--config", str(_write(config, tmp_path / "study.json"))])
    assert result.exit_code == 2, result.output
    assert "input_model[1].model_path" in result.output and "Traceback" not in result.output
    assert len(optuna.load_study(study_name="out", storage=f"sqlite:///{tmp_path / 'out' / 'study.db'}").trials) == 2


def _words_tokenizer(folder: Path) -> None:
    """Replace the folder's tokenizer by a word-level one that knows none of the labels: each tokenizes to <unk>."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"<unk>": 0, "<|endoftext|>": 1, "###": 2, "Text:": 3}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", unk_token="<unk>",
                            pad_token="<|endoftext|>").save_pretrained(folder)


def test_validate_refuses_a_candidate_whose_tokenizer_cannot_tell_the_labels_apart(
        tmp_path: Path, two_models: tuple[Path, Path], tone_file: Path) -> None:
    a, b = two_models
    bad = tmp_path / "bad"
    shutil.copytree(b, bad)
    _words_tokenizer(bad)
    config = base_config([str(a), {"model_path": str(bad), "name": "words"}], tone_file, tmp_path)
    result = CliRunner().invoke(app, ["validate", "--config", str(_write(config, tmp_path / "bad.json"))])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: input_model[1]: candidate 'words'"), result.output
    assert "the same tokens" in errors[0] and "Traceback" not in result.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()  # nothing written
    # The run refuses it too, before writing anything.
    result = CliRunner().invoke(app, ["run", "--config", str(tmp_path / "bad.json")])
    assert result.exit_code == 2 and "candidate 'words'" in result.output
    assert not (tmp_path / "out").exists()


def test_candidate_names_must_differ_and_one_candidate_is_the_single_model_form(
        tmp_path: Path, two_models: tuple[Path, Path], tone_file: Path) -> None:
    a, b = two_models
    twice = base_config([{"model_path": str(a), "name": "x"}, {"model_path": str(b), "name": "x"}], tone_file, tmp_path)
    result = CliRunner().invoke(app, ["validate", "--config", str(_write(twice, tmp_path / "twice.json"))])
    assert result.exit_code == 2
    assert [line for line in result.output.splitlines() if line.startswith("error:")] == [
        "error: input_model[1].name: candidate name 'x' is used twice (input_model[0] has it too); give each candidate "
        "its own name"]
    same_folder_name = base_config([str(a), str(a)], tone_file, tmp_path)  # names from the folder: both 'tiny-a'
    with pytest.raises(ConfigError, match=r"input_model\[1\]: candidate name 'tiny-a' is used twice"):
        load_config(same_folder_name)
    with pytest.raises(ConfigError, match="input_model: an empty list"):
        load_config(base_config([], tone_file, tmp_path))

    one = load_config(base_config([{"model_path": str(a), "name": "only"}], tone_file, tmp_path))
    single = load_config(base_config({"model_path": str(a), "name": "only"}, tone_file, tmp_path))
    assert one.model_dump() == single.model_dump() and one.input_models == []  # exactly the dict form, its name kept
    assert one.input_model.name == "only" and stored_config(one)["input_model"]["name"] == "only"
    unnamed = load_config(base_config({"model_path": str(a)}, tone_file, tmp_path))
    assert "name" not in stored_config(unnamed)["input_model"]  # no name given: stored as before

    searched = load_config(base_config([str(a), {"model_path": str(b)}], tone_file, tmp_path))
    assert searched.base_names == ["tiny-a", "tiny-b"] and searched.input_model.model_path == a
    assert searched.for_base("tiny-b").input_model.model_path == b
    fixed = base_config([str(a), str(b)], tone_file, tmp_path)
    fixed["engine"]["search_strategy"] = False
    with pytest.raises(ConfigError, match="input_model: lists several base models but engine.search_strategy is false"):
        load_config(fixed)
