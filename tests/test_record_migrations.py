"""The stored schema's migration steps (autotune.record_migrations): one per version, each applied in turn, never a
step backwards; what an older autotune wrote reads in today's shape, and is written back in it."""

from __future__ import annotations

from typing import Any

import optuna

from autotune.record_migrations import META_STEPS, RECORD_STEPS, meta_from_attributes, migrate_meta, migrate_record
from autotune.records import (
    META_ATTR,
    RECORD_ATTR,
    SCHEMA_VERSION,
    TrialRecord,
    read_meta,
    read_record,
    write_meta,
    write_record,
)

DROPPED = {"n_drop": 2, "method": "angular_run", "num_hidden_layers": 4, "kept_layers": 2, "dropped": [1, 2]}


def version_3_record() -> dict[str, Any]:
    """A trial record as autotune wrote it at schema 3: no version of its own, DropLayers' summary in its own field."""
    return {"number": 0, "state": "COMPLETE", "point": {"depth.n_drop": 2},
            "passes": [{"name": "depth", "type": "DropLayers", "key": "k1", "seconds": 1.0, "cache_hit": False},
                       {"name": "lora", "type": "LoRA", "key": "k2", "seconds": 2.0, "cache_hit": False}],
            "dropped_layers": DROPPED}


def test_every_version_below_todays_has_a_step() -> None:
    assert sorted(META_STEPS) == list(range(1, SCHEMA_VERSION))
    assert set(range(3, SCHEMA_VERSION)) <= set(RECORD_STEPS)


def test_a_version_3_record_keeps_the_dropped_blocks_under_the_pass_that_dropped_them() -> None:
    raw = version_3_record()
    record = TrialRecord.model_validate(migrate_record(raw))
    assert record.summaries == {"depth": DROPPED}
    assert record.schema_version == SCHEMA_VERSION
    assert "dropped_layers" not in record.model_dump()
    assert raw["dropped_layers"] == DROPPED  # the stored dict itself is not changed


def test_a_record_in_todays_shape_reads_the_same_again() -> None:
    once = migrate_record(version_3_record())
    assert migrate_record(once) == once


def test_a_record_of_a_newer_autotune_is_read_as_it_is() -> None:
    newer = {"number": 1, "state": "COMPLETE", "schema_version": SCHEMA_VERSION + 1, "summaries": {}, "a_new_field": [1]}
    record = TrialRecord.model_validate(migrate_record(newer))
    assert record.schema_version == SCHEMA_VERSION + 1 and record.model_dump()["a_new_field"] == [1]


def test_a_version_1_study_reads_through_every_step_and_keeps_the_version_it_was_written_with() -> None:
    attrs = {"objectives": [{"metric": "accuracy-accuracy", "higher_is_better": True},
                            {"metric": "footprint-size_mb", "higher_is_better": False}],
             "bounds": [], "provider": "CPUExecutionProvider", "config": {},
             "autotune_baseline": {"accuracy-accuracy": {"value": 0.5, "name": "accuracy"}}}
    raw = migrate_meta(meta_from_attributes(attrs))
    assert raw["schema_version"] == 1 and raw["fingerprint"] is None
    assert [o["kind"] for o in raw["objectives"]] == ["accuracy", "size"]


def test_records_and_meta_are_written_back_in_todays_shape() -> None:
    study = optuna.create_study(directions=["maximize"])
    trial = study.ask()
    trial.set_user_attr(RECORD_ATTR, version_3_record())
    study.tell(trial, 0.5)
    stored = study.trials[0]
    record = read_record(stored)
    assert record.summaries == {"depth": DROPPED}
    fresh = study.ask()
    write_record(fresh, record)
    assert fresh.user_attrs[RECORD_ATTR]["schema_version"] == SCHEMA_VERSION
    assert "dropped_layers" not in fresh.user_attrs[RECORD_ATTR]
    study.set_user_attr(META_ATTR, {"schema_version": 2, "objectives": [], "config": {}})
    meta = read_meta(study)
    assert meta.schema_version == 2 and meta.fingerprint is None
    write_meta(study, meta)
    assert study.user_attrs[META_ATTR]["schema_version"] == SCHEMA_VERSION
