"""One training precision per study (issue 31 item 4): two workers of one study, on two caches as two machines of
one class would have, see opposite loads (the probe's clock says bf16 is faster to one, fp32 to the other); each
LoRA point is trained once, every fine-tune in the precision the first worker decided, which the study keeps and
the card shows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna

from autotune.records import PRECISION_ATTR, StudyView, read_meta
from tests.search.test_study import study_config

ROOT = Path(__file__).resolve().parents[2]


def worker(config: Path, cache: Path, faster: str, *extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "AUTOTUNE_PRECISION_PROBE"}  # the suite turns the probe off
    env.update({"COLUMNS": "200", "AUTOTUNE_CACHE_DIR": str(cache), "AUTOTUNE_TEST_PROBE_FASTER": faster})
    log = config.with_name(f"worker-{faster}.log")
    with log.open("w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "tests.probe_hooks", "run", "--config", str(config), *extra],
                                stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    proc.log = log  # type: ignore[attr-defined]
    return proc


def test_two_workers_under_opposite_loads_train_each_point_once_in_one_precision(tmp_path: Path, tiny_model: Path,
                                                                                 tone_file: Path) -> None:
    config = study_config(tiny_model, tone_file, tmp_path)
    config["passes"]["lora"]["r"] = [2, 4, 8]
    config["passes"]["build"]["precision"] = "int4"
    config["evaluators"]["tiny"]["metrics"] = config["evaluators"]["tiny"]["metrics"][:1]  # accuracy: what trains matters
    path = tmp_path / "study.json"
    path.write_text(json.dumps(config))
    (tmp_path / "out").mkdir()
    storage = f"sqlite:///{tmp_path / 'out' / 'study.db'}"
    first = worker(path, tmp_path / "cache-a", "bf16", "--n-trials", "1")  # the other two points are the second's
    deadline = time.time() + 300
    study = None
    while time.time() < deadline and first.poll() is None:  # the second joins once the study holds the first's decision
        try:
            study = optuna.load_study(study_name="out", storage=storage)
            if PRECISION_ATTR in study.user_attrs and read_meta(study).grid_enqueued:
                break
        except KeyError:
            pass
        time.sleep(0.5)
    second = worker(path, tmp_path / "cache-b", "fp32")
    for proc in (first, second):
        proc.wait(timeout=600)
        assert proc.returncode == 0, proc.log.read_text()  # type: ignore[attr-defined]
    study = optuna.load_study(study_name="out", storage=storage)
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(t.params["lora.r"] for t in trials) == [2, 4, 8]  # each point once, none twice
    [decision] = study.user_attrs[PRECISION_ATTR].values()
    assert decision["precision"] == "bf16"
    # Every fine-tune either worker trained (the second also rebuilt the first's point, to export it from its own
    # cache, under the same key) is in the study's precision.
    keys = {p["key"] for t in trials for p in t.user_attrs["autotune_record"]["passes"] if p["name"] == "lora"}
    trained = {(cache.name, key): json.loads((cache / "models" / key / "model" / "train_stats.json").read_text())["precision"]
               for cache in (tmp_path / "cache-a", tmp_path / "cache-b") for key in keys if (cache / "models" / key).is_dir()}
    assert len(keys) == 3 and set(trained.values()) == {"bf16"}, trained
    assert sum(1 for cache, _ in trained if cache == "cache-b") >= 2  # the fp32-leaning worker trained its points in bf16
    assert "probing the training precision" not in second.log.read_text()  # type: ignore[attr-defined]
    assert len(list((tmp_path / "cache-b" / "precision_probe").glob("*.json"))) == 0  # it never probed: the study said
    card = json.loads((tmp_path / "out" / "best" / "model_card.json").read_text())
    assert [d["precision"] for d in card["training_precision"]] == ["bf16"]
    assert "training precision** (auto" in (tmp_path / "out" / "best" / "model_card.md").read_text()
    assert StudyView.load(study).records
