"""A user's own metric, named in the config, without touching autotune."""

from __future__ import annotations

from pathlib import Path

from autotune.cache import Cache
from autotune.config_checks import load_config
from autotune.evaluation.base import EvalModel
from autotune.evaluation.runner import ModelEvaluator
from autotune.pipeline import Pipeline
from tests.conftest import tiny_config

USER_SCRIPT = '''
from pathlib import Path

def answer_stats(model_dir, data, scale=1.0):
    files = sum(1 for p in Path(model_dir).iterdir() if p.is_file())
    return {"file_count": files * scale, "eval_rows": len(data.eval)}
'''


def test_custom_function_metric(tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    (tmp_path / "my_metrics.py").write_text(USER_SCRIPT)
    raw = tiny_config(tiny_model, tone_file, tmp_path)
    raw["evaluators"] = {"mine": {"metrics": [{
        "name": "stats", "type": "custom", "data_config": "tones",
        "sub_types": [{"name": "file_count", "higher_is_better": False}, {"name": "eval_rows"}],
        "user_config": {"function": "my_metrics.py:answer_stats", "scale": 2.0},
    }]}}
    raw["engine"]["evaluator"] = "mine"
    config = load_config(raw, base_dir=tmp_path)
    pipeline = Pipeline(config, cache=Cache(config.engine.cache_dir))
    metrics = ModelEvaluator(config, cache=pipeline.cache, data_loader=pipeline.data).evaluate(EvalModel.from_folder(tiny_model))
    files = sum(1 for p in tiny_model.iterdir() if p.is_file())
    assert metrics["stats-file_count"].value == 2.0 * files
    assert metrics["stats-file_count"].higher_is_better is False
    assert metrics["stats-eval_rows"].value == 40
