"""What a study stores, typed: ``StudyMeta`` (one per study) and ``TrialRecord`` (one per trial), whose types
are in :mod:`autotune.record_schema` (re-exported here).

This module is the only place that reads or writes Optuna user attributes. Every other module
(selection, report, export, the CLI) gets these types, so a field has one name and one default.
The stored form carries ``schema_version``; what an older autotune wrote (down to 0.1's separate attributes) is
read through the migration steps of :mod:`autotune.record_migrations`, so an old ``study.db`` still opens, and is
written back in today's shape.
"""

from __future__ import annotations

from typing import Any

from autotune.record_migrations import meta_from_attributes, migrate_meta, migrate_record
from autotune.record_schema import (
    SCHEMA_VERSION,
    BaseModelInfo,
    Bound,
    BoundSpec,
    DataSummary,
    MetricKind,
    MetricValue,
    ObjectiveSpec,
    Owner,
    PassSummary,
    StudyFingerprint,
    StudyMeta,
    TrialRecord,
    TrialState,
    metric_kind,
)

__all__ = [
    "CONSTRAINTS_ATTR", "FINAL_ATTR", "INTERMEDIATE_ATTR", "META_ATTR", "PRECISION_ATTR", "RECORD_ATTR",
    "SCHEMA_VERSION", "BaseModelInfo", "Bound", "BoundSpec", "DataSummary", "MetricKind", "MetricValue",
    "ObjectiveSpec", "Owner", "PassSummary", "StudyFingerprint", "StudyMeta", "StudyPrecision", "StudyView",
    "TrialRecord", "TrialState", "has_meta", "meta_from_user_attrs", "metric_kind", "read_constraints",
    "read_intermediate", "read_meta", "read_record", "record_field", "write_constraints", "write_final",
    "write_final_baseline", "write_intermediate", "write_meta", "write_record", "write_record_in_storage",
]

# The stored types live in autotune.record_schema (re-exported here); SCHEMA_VERSION is theirs.
META_ATTR = "autotune_meta"
RECORD_ATTR = "autotune_record"
# Measured after the trials finished (Optuna freezes a finished trial's attributes): test-split metrics
# and interleaved latency re-measurements, by trial number.
FINAL_ATTR = "autotune_final"
BASELINE_FINAL = "baseline"  # FINAL_ATTR's entry for the baseline (the others are trial numbers)
# Optuna's constraints_func reads this list from the trial (a plain list of violations, in bound order).
CONSTRAINTS_ATTR = "autotune_constraints"
# The CPU training-precision decisions the study's fine-tunes use, by machine class and model shape (one per study).
PRECISION_ATTR = "autotune_precision"
# A fine-tune's eval loss by step (the early-stopping rule compares trials at a step; Optuna's pruners
# refuse multi-objective studies). The name predates the ``autotune_`` prefix: kept so old studies read.
INTERMEDIATE_ATTR = "intermediate_eval_loss"


def write_constraints(trial: Any, violations: list[float]) -> None:
    """The trial's constraint violations, in bound order, where Optuna's constraints_func reads them."""
    trial.set_user_attr(CONSTRAINTS_ATTR, list(violations))


def read_constraints(trial: Any) -> list[float] | None:
    """What :func:`write_constraints` stored (None: nothing, e.g. a trial stopped before it was measured)."""
    values = getattr(trial, "user_attrs", {}).get(CONSTRAINTS_ATTR)
    return [float(v) for v in values] if values else None


def write_intermediate(trial: Any, values: dict[int, float]) -> None:
    """A running fine-tune's eval loss by step, where other trials' early-stopping rules read it."""
    trial.set_user_attr(INTERMEDIATE_ATTR, {str(k): float(v) for k, v in values.items()})


def read_intermediate(trial: Any) -> dict[int, float]:
    raw = trial.user_attrs.get(INTERMEDIATE_ATTR) or {}
    return {int(k): float(v) for k, v in raw.items()}


def _stored_record(record: TrialRecord) -> dict[str, Any]:
    return {**record.model_dump(mode="json", exclude_none=False), "schema_version": SCHEMA_VERSION}


def write_record(trial: Any, record: TrialRecord) -> None:
    trial.set_user_attr(RECORD_ATTR, _stored_record(record))


def write_record_in_storage(storage: Any, trial_id: int, record: TrialRecord) -> None:
    """:func:`write_record` for a trial another process runs (only the storage API can reach it)."""
    storage.set_trial_user_attr(trial_id, RECORD_ATTR, _stored_record(record))


def record_field(trial: Any, name: str) -> Any:
    """One field of the trial's stored record as written, without validating the whole record: for the
    checks that run over every trial of a study at each step (a duplicate's mark, a failure's reason).
    Only for fields whose stored form every schema version shares."""
    return (trial.user_attrs.get(RECORD_ATTR) or {}).get(name)


def read_record(trial: Any) -> TrialRecord:
    """The record of a frozen Optuna trial (a bare one for trials that died before writing it)."""
    raw = trial.user_attrs.get(RECORD_ATTR)
    record = TrialRecord.model_validate(migrate_record(raw)) if raw else TrialRecord(number=trial.number)
    record.number = trial.number
    record.state = trial.state.name
    if not record.point:
        record.point = dict(trial.params)
    if trial.state.name == "FAIL" and not record.fail_reason:
        record.fail_reason = trial.user_attrs.get("fail_reason") or "the worker stopped during this trial (no heartbeat)"
    return record


def write_final(study: Any, number: int, *, test_metrics: dict[str, MetricValue] | None = None,
                remeasured: dict[str, MetricValue] | None = None) -> None:
    """Store a finished trial's test metrics and/or re-measured latency (merged with what is there)."""
    final = dict(study.user_attrs.get(FINAL_ATTR) or {})
    entry = dict(final.get(str(number)) or {})
    if test_metrics is not None:
        entry["test_metrics"] = {k: m.model_dump(mode="json") for k, m in test_metrics.items()}
    if remeasured is not None:
        entry["remeasured"] = {k: m.model_dump(mode="json") for k, m in remeasured.items()}
    final[str(number)] = entry
    study.set_user_attr(FINAL_ATTR, final)


def write_final_baseline(study: Any, remeasured: dict[str, MetricValue], *, base: str | None = None) -> None:
    """Store the baseline's latency (the base model ``base``'s, when the study searches the base model)
    re-measured in the same interleaved rounds as the Pareto set."""
    final = dict(study.user_attrs.get(FINAL_ATTR) or {})
    entry = {"remeasured": {k: m.model_dump(mode="json") for k, m in remeasured.items()}}
    final[BASELINE_FINAL if base is None else f"{BASELINE_FINAL}:{base}"] = entry
    if base is not None and read_meta(study).bases[:1] and read_meta(study).bases[0].name == base:
        final[BASELINE_FINAL] = entry  # the first base's is the study's default baseline
    study.set_user_attr(FINAL_ATTR, final)


class StudyPrecision:
    """The study's training-precision decisions (autotune.training.precision), kept with the study so every
    worker, a resume and ``autotune select`` train a point in one precision, whatever their machine's load."""

    def __init__(self, study: Any) -> None:
        self.study = study

    def all(self) -> dict[str, dict[str, Any]]:
        return dict(self.study.user_attrs.get(PRECISION_ATTR) or {})

    def get(self, key: str) -> dict[str, Any] | None:
        return self.all().get(key)

    def claim(self, key: str, decision: dict[str, Any]) -> dict[str, Any]:
        """Store ``decision`` unless the study holds one for ``key``; the one the study holds after."""
        held = self.all()
        if key not in held:
            held[key] = decision
            self.study.set_user_attr(PRECISION_ATTR, held)
        return self.all().get(key, decision)


def write_meta(study: Any, meta: StudyMeta) -> None:
    """The meta, in today's shape (whatever version it was read from)."""
    study.set_user_attr(META_ATTR, {**meta.model_dump(mode="json"), "schema_version": SCHEMA_VERSION})


def has_meta(study: Any) -> bool:
    """Whether the study was set up by an autotune run (any version: 0.1's separate attributes count)."""
    return bool(study.user_attrs)


def read_meta(study: Any) -> StudyMeta:
    """The study's meta in today's shape, through the migration steps from the version it was written with (a study of
    autotune 0.1 has no meta attribute: its separate attributes are version 1). ``schema_version`` says which."""
    return meta_from_user_attrs(study.user_attrs)


def meta_from_user_attrs(attrs: dict[str, Any]) -> StudyMeta:
    """:func:`read_meta` from a study's user attributes as the storage returns them."""
    raw = attrs[META_ATTR] if META_ATTR in attrs else meta_from_attributes(attrs)
    return StudyMeta.model_validate(migrate_meta(raw))


class StudyView:
    """A study as its storage holds it: the meta and every trial's record (no live objects needed)."""

    def __init__(self, name: str, meta: StudyMeta, records: list[TrialRecord], study: Any = None) -> None:
        self.name = name
        self.meta = meta
        self.records = records
        self.study = study  # the optuna Study it came from (for importance), if any

    @classmethod
    def load(cls, study: Any) -> StudyView:
        records = [read_record(t) for t in study.get_trials(deepcopy=False)]
        final = study.user_attrs.get(FINAL_ATTR) or {}
        for record in records:
            measured = final.get(str(record.number)) or {}
            record.test_metrics = {k: MetricValue.model_validate(v) for k, v in (measured.get("test_metrics") or {}).items()}
            record.remeasured = {k: MetricValue.model_validate(v) for k, v in (measured.get("remeasured") or {}).items()}
        meta = read_meta(study)
        # The baseline's latency re-measured beside the Pareto set replaces its first value (kept in
        # details): a ratio to the baseline then compares measurements of the same rounds, not of other hours.
        for key, value in ((final.get(BASELINE_FINAL) or {}).get("remeasured") or {}).items():
            if key in meta.baseline:
                meta.baseline[key] = MetricValue.model_validate(value)
        for base, baseline in meta.base_baselines.items():  # each base model's own, likewise
            for key, value in ((final.get(f"{BASELINE_FINAL}:{base}") or {}).get("remeasured") or {}).items():
                if key in baseline:
                    baseline[key] = MetricValue.model_validate(value)
        return cls(study.study_name, meta, records, study)

    @property
    def objectives(self) -> list[ObjectiveSpec]:
        return self.meta.objectives

    @property
    def bounds(self) -> list[BoundSpec]:
        return self.meta.bounds

    @property
    def baseline(self) -> dict[str, MetricValue]:
        return self.meta.baseline

    @property
    def provider(self) -> str:
        return self.meta.provider

    def baseline_for(self, record: TrialRecord | None) -> dict[str, MetricValue]:
        """The baseline a trial is compared with: its own base model's (like for like), else the study's."""
        if record is not None and record.base is not None and record.base in self.meta.base_baselines:
            return self.meta.base_baselines[record.base]
        return self.meta.baseline

    def title(self, metric: str) -> str:
        """The readable name of metric id ``metric``, as the trials table shows it: the objective's label,
        else the label its measurements carry (a bound on a metric that is no objective), else the id."""
        objective = next((o for o in self.objectives if o.metric == metric), None)
        if objective is not None and objective.label:
            return objective.label
        for measured in (self.baseline, *(r.metrics for r in self.records)):
            if metric in measured and measured[metric].label:
                return measured[metric].label  # type: ignore[return-value]
        return metric

    def completed(self) -> list[TrialRecord]:
        return [r for r in self.records if r.state == "COMPLETE" and r.objectives]

    def states(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.records:
            counts[r.state] = counts.get(r.state, 0) + 1
        return counts
