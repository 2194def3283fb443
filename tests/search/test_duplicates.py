"""No repeated points: in a finite space a sampler's repeat is pruned as a duplicate, an unseen point
runs instead, and the duplicate counts against neither --n-trials nor max_samples."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

import autotune
from autotune.records import RECORD_ATTR
from tests.search.test_study import study_config


@pytest.mark.parametrize("sampler", ["tpe", "random", "nsga2"])
def test_four_trials_on_a_four_point_space_try_four_distinct_points(sampler: str, tmp_path: Path, tiny_model: Path,
                                                                    tone_file: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    config = study_config(tiny_model, tone_file, tmp_path)  # r {2, 4} x precision {int4, fp32}
    config["engine"]["cache_dir"] = str(tmp_path_factory.getbasetemp() / "duplicates-cache")  # the samplers share the work
    config["engine"]["search_strategy"] = {"sampler": sampler, "seed": 0, "early_stop": {"enabled": False}}
    autotune.run(config, n_trials=3)
    autotune.run(config, n_trials=1)  # the case: a second run of one trial repeated a point
    trials = optuna.load_study(study_name="out", storage=f"sqlite:///{tmp_path / 'out' / 'study.db'}").trials
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len({tuple(sorted(t.params.items())) for t in complete}) == len(complete) == 4
    duplicates = [t for t in trials if t.user_attrs[RECORD_ATTR].get("duplicate_of") is not None]
    assert all(t.state == optuna.trial.TrialState.PRUNED for t in duplicates)
    assert len(trials) == 4 + len(duplicates)
