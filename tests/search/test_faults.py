"""Trial faults are recorded on the trial with their reason and the study goes on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

import autotune
from tests.search.test_study import load, study_config


def one_point_study(tiny_model: Path, tone_file: Path, root: Path, **engine: Any) -> dict[str, Any]:
    config = study_config(tiny_model, tone_file, root)
    config["passes"]["lora"]["r"] = [2, 4]
    config["passes"]["build"]["precision"] = "int4"
    config["engine"].update({"evaluate_input_model": False, **engine})
    return config


def states_and_reasons(root: Path) -> list[tuple[str, str | None]]:
    return [(t.state.name, t.user_attrs.get("autotune_record", {}).get("fail_reason")) for t in load(root).trials]


def test_nan_loss_fails_the_trial_and_the_study_goes_on(tmp_path: Path, tiny_model: Path, tone_file: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from transformers import Trainer

    original = Trainer.compute_loss
    calls = {"n": 0}

    def nan_for_rank_2(self: Any, model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        loss = original(self, model, inputs, *args, **kwargs)
        rank = next(iter(model.peft_config.values())).r
        return loss * torch.tensor(float("nan")) if rank == 2 else loss

    monkeypatch.setattr(Trainer, "compute_loss", nan_for_rank_2)
    config = one_point_study(tiny_model, tone_file, tmp_path)
    config["passes"]["lora"]["training_args"]["logging_steps"] = 1
    result = autotune.run(config)
    outcome = states_and_reasons(tmp_path)
    assert ("COMPLETE", None) in outcome
    failed = [reason for state, reason in outcome if state == "FAIL"]
    assert len(failed) == 1 and "TrainingDiverged" in failed[0] and "nan" in failed[0].lower()
    assert (result.trials["state"] == "FAIL").sum() == 1
    del calls


def test_a_trial_past_its_timeout_fails_with_the_reason(tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    config = one_point_study(tiny_model, tone_file, tmp_path, trial_timeout=0.5)
    config["passes"]["lora"]["r"] = 2
    config["passes"]["lora"]["training_args"]["max_steps"] = 2000
    autotune.run(config)
    [(state, reason)] = states_and_reasons(tmp_path)
    assert state == "FAIL" and "TrialTimeout" in (reason or "") and "trial_timeout" in (reason or "")


def test_a_failing_build_and_a_failing_evaluator_are_recorded(tmp_path: Path, tiny_model: Path, tone_file: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import autotune.passes.model_builder as model_builder

    real_build = model_builder.build_onnx  # the builder runs in a process of its own: fail it before that

    def build(source: Any, output: Any, params: Any, **kwargs: Any) -> None:
        if params.precision == "int8":
            raise RuntimeError("injected build failure")
        real_build(source, output, params, **kwargs)

    monkeypatch.setattr(model_builder, "build_onnx", build)
    (tmp_path / "flaky.py").write_text(  # fails on the fp32 build only (the tiny int4 weights are ~0.26 MB, fp32 ~0.6 MB)
        "import os\n"
        "def metric(model_dir, data):\n"
        "    if os.path.getsize(os.path.join(model_dir, 'model.onnx.data')) > 450_000:\n"
        "        raise ValueError('injected evaluator failure')\n"
        "    return {'ok': 1.0}\n"
    )
    config = one_point_study(tiny_model, tone_file, tmp_path)
    config["passes"]["lora"]["r"] = 2
    config["passes"]["build"]["precision"] = ["int4", "int8", "fp32"]
    config["evaluators"]["tiny"]["metrics"].append({"name": "flaky", "type": "custom", "sub_types": [{"name": "ok", "priority": -1}],
                                                    "user_config": {"function": str(tmp_path / "flaky.py") + ":metric"}})
    result = autotune.run(config)
    by_precision = {t.params["build.precision"]: t for t in load(tmp_path).trials}
    assert by_precision["int4"].state == optuna.trial.TrialState.COMPLETE
    assert "injected build failure" in by_precision["int8"].user_attrs["autotune_record"]["fail_reason"]
    assert "injected evaluator failure" in by_precision["fp32"].user_attrs["autotune_record"]["fail_reason"]
    assert (result.trials["state"] == "FAIL").sum() == 2
    html = (tmp_path / "out" / "report.html").read_text()
    assert "injected build failure" in html and "injected evaluator failure" in html
