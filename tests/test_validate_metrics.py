"""``autotune validate`` checks the evaluators' metrics: an unknown type or sub-type is one line naming its key, exit 2."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_cli_validate import _config, _run


def _with_metrics(model: Path, metric: dict[str, Any]) -> dict[str, Any]:
    cfg = _config(model)
    cfg["evaluators"] = {"ev": {"metrics": [metric]}}
    cfg["engine"]["evaluator"] = "ev"
    return cfg


def _footprint(**changes: Any) -> dict[str, Any]:
    return {"name": "fp", "type": "footprint", "sub_types": [{"name": "size_mb"}], **changes}


@pytest.mark.parametrize(
    ("metric", "where", "words"),
    [
        (_footprint(type="footprnt"), "evaluators.ev.metrics[0].type", 'unknown metric type "footprnt"; did you mean \'footprint\'?'),
        (_footprint(sub_types=[{"name": "size_mb"}, {"name": "sise_mb"}]), "evaluators.ev.metrics[0].sub_types[1].name",
         'unknown footprint sub-type "sise_mb"; did you mean \'size_mb\'?'),
        (_footprint(user_config={"repeatz": 3}), "evaluators.ev.metrics[0].user_config.repeatz", "unknown key"),
        ({"name": "acc", "type": "accuracy", "sub_types": [{"name": "accuracy"}]}, "evaluators.ev.metrics[0].data_config",
         "name the data config this metric reads"),
    ],
    ids=["unknown-type", "unknown-sub-type", "unknown-user-config-key", "no-data"],
)
def test_validate_refuses_a_bad_metric(tmp_path: Path, metric: dict[str, Any], where: str, words: str) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(_with_metrics(tmp_path, metric), sort_keys=False))
    proc = _run(path, tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {where}: {words}"), lines[0]


def test_validate_names_the_evaluator_file_of_a_bad_metric(tmp_path: Path) -> None:
    (tmp_path / "evaluators").mkdir()
    (tmp_path / "evaluators" / "mine.yaml").write_text(yaml.safe_dump({"metrics": [
        _footprint(), {"name": "lat", "type": "latency", "sub_types": [{"name": "decode_ms_per_tokn_p50"}]}]}))
    cfg = _config(tmp_path)
    cfg["engine"]["evaluator"] = "mine"
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = _run(path, tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    where = f"{tmp_path / 'evaluators' / 'mine.yaml'}: metrics[1].sub_types[0].name"
    assert lines[0].startswith(f'error: {where}: unknown latency sub-type "decode_ms_per_tokn_p50"'), lines[0]


def test_validate_accepts_good_metrics(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(_with_metrics(tmp_path, _footprint(sub_types=[{"name": "size_mb"}, {"name": "peak_rss_mb"}])),
                                   sort_keys=False))
    proc = _run(path, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "valid" in proc.stdout
