"""Nothing let in: no remote code unless asked, no pickle, no path tricks, no secrets, no hub."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest

from autotune.config_checks import load_config
from autotune.search.study import redact_url, safe_name


def test_generated_names_cannot_escape_the_output_folder() -> None:
    for name in ("../../etc/passwd", "..", "a/../../b", "/abs/path", "~root", "x\\..\\y"):
        safe = safe_name(name)
        assert "/" not in safe and "\\" not in safe and not safe.startswith(".") and safe


def test_storage_passwords_are_redacted() -> None:
    url = "postgresql+psycopg2://tuner:s3cr3t-pw@db.local:5432/studies"
    assert "s3cr3t-pw" not in redact_url(url)
    assert "tuner" in redact_url(url) and "db.local" in redact_url(url)


def test_trust_remote_code_is_off_unless_set_and_then_said(tmp_path: Path, tiny_model: Path, caplog: pytest.LogCaptureFixture) -> None:
    from autotune.pipeline import check_input_model

    raw: dict[str, Any] = {"input_model": {"type": "HfModel", "model_path": str(tiny_model)}}
    assert load_config(raw, base_dir=tmp_path).input_model.trust_remote_code is False
    raw["input_model"]["load_kwargs"] = {"trust_remote_code": True}
    config = load_config(raw, base_dir=tmp_path)
    assert config.input_model.trust_remote_code is True
    with caplog.at_level(logging.WARNING, logger="autotune"):
        check_input_model(config)
    assert any("trust_remote_code is true" in r.message for r in caplog.records)


def test_weights_are_loaded_from_safetensors_only(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoModelForCausalLM

    from autotune.models.loading import load_causal_lm

    seen: dict[str, Any] = {}

    def spy(path: str, **kwargs: Any) -> None:
        seen.update(kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    load_causal_lm(tiny_model)
    assert seen["use_safetensors"] is True and seen["trust_remote_code"] is False


@pytest.mark.parametrize("user_offline", [None, "1"])
def test_libraries_stay_offline_and_the_users_own_hub_choice_is_kept(monkeypatch: pytest.MonkeyPatch,
                                                                      user_offline: str | None) -> None:
    """go_offline makes the libraries offline (they get local folders only) but records what the user set:
    that, not autotune's own switch, decides whether an input model id may be downloaded."""
    from autotune.models.hub import USER_OFFLINE_MARK, go_offline, hub_offline

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", USER_OFFLINE_MARK, "HF_HUB_DISABLE_TELEMETRY"):
        monkeypatch.delenv(name, raising=False)
    if user_offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", user_offline)
    go_offline()
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["HF_DATASETS_OFFLINE"] == "1"
    assert os.environ["HF_HUB_DISABLE_TELEMETRY"] == "1"
    assert hub_offline() is bool(user_offline)
    go_offline()  # again (a child process inherits the environment): the user's choice, not autotune's switch
    assert hub_offline() is bool(user_offline)


def test_a_study_name_with_dots_stays_inside(tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    import optuna

    import autotune
    from tests.search.test_study import study_config

    # The run works two folders down, so a name that climbed "../.." would still land inside tmp_path.
    work = tmp_path / "a" / "b"
    config = study_config(tiny_model, tone_file, work)
    config["passes"]["lora"]["r"] = 2
    config["passes"]["build"]["precision"] = "int4"
    config["engine"]["study_name"] = "../../escape"
    beside = set(tmp_path.parent.iterdir())
    autotune.run(config)
    assert set(tmp_path.parent.iterdir()) == beside  # nothing written next to the test's folder
    made = [p for p in tmp_path.rglob("*") if p != tone_file]
    outside = [p for p in made if p not in (tmp_path / "a", work) and work not in p.parents]
    assert outside == []  # every file lies under the run's output and cache folders
    assert not any(part.startswith("..") for p in made for part in p.relative_to(tmp_path).parts)
    names = [s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{work / 'out' / 'study.db'}")]
    assert len(names) == 1
    name = names[0]  # the name the storage, the reports and any file named after the study see
    assert "/" not in name and "\\" not in name and not name.startswith(".") and name == Path(name).name
