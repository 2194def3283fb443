"""The commands and flags docs/commands.md lists, run as a user runs them, on one small study shared by the module:
``run`` (with ``--timeout`` and ``--fail-fast``), ``trials``, ``select`` and its flags, ``evaluate``; the
``peak_rss_mb`` and perplexity metrics; and the hard links in ``best/``.

``run`` and ``evaluate`` run in a child process (they set up the process's logging as the real command
does); ``trials`` and ``select`` through typer's runner.
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
from typer.testing import CliRunner

from autotune.cli import app
from autotune.errors import UserError
from tests.conftest import tiny_config

ACC, PPL, LAT = "accuracy-accuracy", "accuracy-perplexity", "latency-decode_ms_per_token_p50"
SIZE, RSS = "footprint-size_mb", "footprint-peak_rss_mb"
EVALUATOR = {"metrics": [
    {"name": "accuracy", "type": "accuracy", "sub_types": [{"name": "accuracy", "priority": 1}, {"name": "perplexity", "priority": -1}]},
    {"name": "latency", "type": "latency", "sub_types": [{"name": "decode_ms_per_token_p50", "priority": 2}],
     "user_config": {"repeats": 2, "warmup": 0, "generate_tokens": 4, "prompt_tokens": 8}},
    {"name": "footprint", "type": "footprint", "sub_types": [{"name": "size_mb", "priority": -1}, {"name": "peak_rss_mb", "priority": -1}]},
]}


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "250"}
    return subprocess.run([sys.executable, "-m", "autotune.cli", *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=600)


def write_config(root: Path, name: str, config: dict[str, Any]) -> Path:
    path = root / f"{name}.json"
    path.write_text(json.dumps(config))
    return path


def base_config(root: Path, data: Path, model: Path, output: str) -> dict[str, Any]:
    config = tiny_config(model, data, root)
    config["passes"]["lora"]["r"] = 2
    config["passes"]["lora"]["training_args"]["max_steps"] = 2
    config["passes"]["build"]["precision"] = ["int4", "fp32"]
    config["data_configs"][0]["eval_dataset_size"] = 24
    # "gen": a cheap evaluator whose generation in PyTorch (the baseline) passes a cache to the model.
    config["evaluators"] = {"ev": copy.deepcopy(EVALUATOR), "gen": {"metrics": [
        {"name": "gen", "type": "accuracy", "sub_types": [{"name": "accuracy"}],
         "user_config": {"mode": "generation", "max_examples": 4, "max_new_tokens": 3, "perplexity": False}}]}}
    # No final latency re-measure: select reads the latencies trials.csv shows (the re-measure is tested in tests/search).
    config["engine"].update({"evaluator": "ev", "evaluate_input_model": False, "output_dir": str(root / output),
                             "search_strategy": {"sampler": "grid", "seed": 0}, "selection": {"remeasure_rounds": 0}})
    return config


def wider_model(tiny_model: Path, folder: Path) -> Path:
    """The tiny model's tokenizer with hidden size 256: its int4 weights pass 1 MiB, the size from which
    run folders and best/ hard-link weights from the cache instead of copying them."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(folder)
    config = LlamaConfig.from_pretrained(tiny_model)
    config.hidden_size, config.intermediate_size = 256, 512
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, tone_rows: list[dict[str, str]]) -> dict[str, Any]:
    """A two-trial grid study (int4 and fp32 builds of one adapter) run by ``autotune run``."""
    root = tmp_path_factory.mktemp("cli")
    data = root / "tones.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in tone_rows[:160]) + "\n")
    model = wider_model(tiny_model, root / "model")
    config = base_config(root, data, model, "out")
    path = write_config(root, "study", config)
    proc = cli("run", "--config", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "past_key_values" not in proc.stdout + proc.stderr  # a library deprecation never reaches the user
    trials = pd.read_csv(root / "out" / "trials.csv")
    assert list(trials["state"]) == ["COMPLETE", "COMPLETE"]
    return {"root": root, "data": data, "model": model, "config": config, "path": path, "out": root / "out",
            "trials": trials}


def select(study: dict[str, Any], *flags: str) -> tuple[str, dict[str, Any]]:
    result = CliRunner().invoke(app, ["select", str(study["out"]), *flags])
    assert result.exit_code == 0, result.output
    card = json.loads((study["out"] / "best" / "model_card.json").read_text())
    return result.stdout, card


def card_trial(card: dict[str, Any]) -> int:
    return int(card["trial"]) if "trial" in card else int(card["selection"]["trial"])


# -- metrics --------------------------------------------------------------------------------------

def test_perplexity_is_measured_and_plausible(study: dict[str, Any]) -> None:
    vocab = len(json.loads((study["model"] / "tokenizer.json").read_text())["model"]["vocab"])
    for value in study["trials"][PPL]:
        # A barely trained model: between perfect (1) and far worse than guessing uniformly over the vocabulary.
        assert math.isfinite(value) and 1.0 < value < 2 * vocab


def test_peak_rss_is_measured_and_plausible(study: dict[str, Any]) -> None:
    for rss, size in zip(study["trials"][RSS], study["trials"][SIZE], strict=True):
        # A process that loaded onnxruntime-genai and the model: tens to hundreds of MB, never less than the weights.
        assert 20.0 < rss < 4096.0 and rss > size


# -- trials and select ----------------------------------------------------------------------------

def test_trials_prints_every_trial(study: dict[str, Any]) -> None:
    result = CliRunner().invoke(app, ["trials", str(study["out"])], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if "COMPLETE" in line]
    assert len(rows) == 2
    assert any("int4" in row for row in rows) and any("fp32" in row for row in rows)
    assert LAT in result.stdout and ACC in result.stdout


def test_trials_on_a_folder_without_a_study_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["trials", str(tmp_path)])
    assert result.exit_code == 2 and result.output.startswith(f"error: {tmp_path}: no study.db here")


def test_select_min_latency_picks_the_fastest_trial(study: dict[str, Any]) -> None:
    out, card = select(study, "--policy", "min-latency")
    trials = study["trials"]
    fastest = int(trials.loc[trials[LAT].idxmin(), "number"])
    assert out.startswith(f"selected trial {fastest}: lowest decode p50 (ms/token)")  # the table's label, not the id
    assert card_trial(card) == fastest


def test_select_latency_budget_filters_on_latency(study: dict[str, Any]) -> None:
    trials = study["trials"]
    budget = float(trials[LAT].max()) * 10  # every trial fits
    out, card = select(study, "--latency-budget", str(budget))
    assert card["feasible"] is True and f"decode p50 (ms/token) <= {budget} ms" in card["selection"]["rule"]
    out, card = select(study, "--latency-budget", "0.000001")  # no trial fits: said, and the nearest exported
    assert card["feasible"] is False and "1e-06 ms" in card["selection"]["rule"] and "1e-06 ms" in out


def test_select_min_accuracy_filters_on_accuracy(study: dict[str, Any]) -> None:
    floor = float(study["trials"][ACC].min())
    out, card = select(study, "--min-accuracy", str(floor))
    assert card["feasible"] is True and f"accuracy >= {floor}" in card["selection"]["rule"]
    out, card = select(study, "--min-accuracy", "1.01")  # above any accuracy
    assert card["feasible"] is False and "accuracy >= 1.01" in card["selection"]["rule"] and "1.01" in out


def test_select_weighted_uses_the_weights(study: dict[str, Any]) -> None:
    out, _ = select(study, "--policy", "weighted", "--weight", f"{LAT}=1", "--weight", f"{ACC}=0")
    assert "weighted sum" in out and "weights: accuracy 0, decode p50 (ms/token) 1" in out
    result = CliRunner().invoke(app, ["select", str(study["out"]), "--policy", "weighted", "--weight", "accuracy=high"])
    assert result.exit_code == 2 and 'error: --weight: expected METRIC=NUMBER, got "accuracy=high"' in result.output
    # The same weights as the policy's own setting (--option, read as YAML); a setting it does not have is refused.
    out, _ = select(study, "--policy", "weighted", "--option", f"weights={{{LAT}: 1, {ACC}: 0}}")
    assert "weights: accuracy 0, decode p50 (ms/token) 1" in out
    result = CliRunner().invoke(app, ["select", str(study["out"]), "--policy", "knee", "--option", "rank=2"])
    assert result.exit_code == 2 and "error: selection.options.rank: policy 'knee' has no setting 'rank' (its settings: none)" \
        in result.output, result.output


def test_best_weights_are_hard_links_to_the_cache(study: dict[str, Any]) -> None:
    select(study)  # the default policy, whatever the tests before left in best/
    best = study["out"] / "best"
    weights = best / "model.onnx.data"
    cached = [p for p in (study["root"] / "cache" / "models").rglob("model.onnx.data") if os.path.samefile(p, weights)]
    assert weights.stat().st_size >= 1 << 20  # large enough to be linked
    assert len(cached) == 1 and weights.stat().st_nlink >= 2  # one copy on disk, shared with the cache entry
    assert (best / "genai_config.json").stat().st_nlink == 1  # small files are real copies, free to edit


# -- the same through the Python API (the CLI only parses and prints) ----------------------------

def test_the_api_does_what_trials_select_and_report_do(study: dict[str, Any]) -> None:
    from autotune import api

    frame = api.trials(study["out"])
    assert list(frame["number"]) == list(study["trials"]["number"]) and list(frame[LAT]) == list(study["trials"][LAT])
    trials = study["trials"]
    fastest = int(trials.loc[trials[LAT].idxmin(), "number"])
    done = api.select(study["out"], policy="min-latency")
    assert done.selection.record.number == fastest and done.best == study["out"] / "best"
    assert card_trial(json.loads((done.best / "model_card.json").read_text())) == fastest
    files = api.report(study["out"])
    assert files and all(path.is_file() for path in files.values())
    assert api.validate(study["path"]).engine.evaluator == "ev"
    with pytest.raises(UserError, match="no study.db here"):
        api.open_study(study["root"])


# -- evaluate ---------------------------------------------------------------------------------------

def test_evaluate_prints_the_model_and_its_baseline(study: dict[str, Any]) -> None:
    proc = cli("evaluate", "--config", str(study["path"]), "--model", str(study["out"] / "best"), "--evaluator", "gen")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    row = next(line for line in proc.stdout.splitlines() if "gen-accuracy" in line)
    metric, value, unit, n, baseline = (cell.strip() for cell in row.strip("│ ").split("│")[:5])
    assert (metric, unit, n) == ("gen-accuracy", "ratio", "4") and value and baseline  # the model's and the baseline's
    assert "provider CPUExecutionProvider" in proc.stdout
    assert "past_key_values" not in proc.stdout + proc.stderr  # the baseline generates in PyTorch: no deprecation noise


def test_evaluate_a_folder_that_is_no_model_is_one_line(study: dict[str, Any], tmp_path: Path) -> None:
    proc = cli("evaluate", "--config", str(study["path"]), "--model", str(tmp_path), "--no-baseline")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path}: not a model folder (no genai_config.json or config.json)"]


# -- run --timeout and --fail-fast ------------------------------------------------------------------

def test_timeout_stops_starting_trials(study: dict[str, Any]) -> None:
    config = base_config(study["root"], study["data"], study["model"], "timeout")
    config["evaluators"]["ev"]["metrics"][1]["user_config"]["repeats"] = 3  # a new measurement: each trial takes seconds
    proc = cli("run", "--config", str(write_config(study["root"], "timeout", config)), "--timeout", "0.5")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    trials = optuna.load_study(study_name="timeout", storage=f"sqlite:///{study['root'] / 'timeout' / 'study.db'}").trials
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 1  # the first trial outlasted the timeout: the second grid point was never started


def failing_config(study: dict[str, Any], name: str) -> dict[str, Any]:
    """The study's grid with a custom metric that raises: every trial fails."""
    (study["root"] / "broken_metric.py").write_text(
        "def score(model_dir, data, **options):\n    raise RuntimeError('injected metric failure')\n")
    config = base_config(study["root"], study["data"], study["model"], name)
    config["evaluators"] = {"ev": {"metrics": [{"name": "broken", "type": "custom", "sub_types": [{"name": "score"}],
                                                "user_config": {"function": str(study["root"] / "broken_metric.py") + ":score"}}]}}
    return config


def failed_trials(study: dict[str, Any], name: str) -> list[Any]:
    trials = optuna.load_study(study_name=name, storage=f"sqlite:///{study['root'] / name / 'study.db'}").trials
    return [t for t in trials if t.state == optuna.trial.TrialState.FAIL]


def test_fail_fast_stops_at_the_first_failed_trial(study: dict[str, Any]) -> None:
    proc = cli("run", "--config", str(write_config(study["root"], "failfast", failing_config(study, "failfast"))), "--fail-fast")
    output = proc.stdout + proc.stderr
    assert len(failed_trials(study, "failfast")) == 1, output  # the second grid point never ran
    assert "injected metric failure" in output
    assert "--fail-fast" in output  # said why the study stopped
    assert proc.returncode == 1  # and the run failed, as the user asked it to


def test_without_fail_fast_the_study_goes_on_after_a_failed_trial(study: dict[str, Any]) -> None:
    import autotune

    result = autotune.run(failing_config(study, "goeson"))
    assert len(failed_trials(study, "goeson")) == 2
    assert list(result.trials["state"]) == ["FAIL", "FAIL"]
    assert all("injected metric failure" in reason for reason in result.trials["fail_reason"])
