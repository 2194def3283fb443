"""The trial record: one typed schema written to Optuna user attributes and read back by reports.

A report never needs anything the storage does not hold.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

RECORD_ATTR = "autotune_record"


class PassSummary(BaseModel):
    name: str
    type: str
    key: str
    seconds: float
    cache_hit: bool


class TrialRecord(BaseModel):
    number: int
    state: str = "RUNNING"
    point: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    metrics: dict[str, dict[str, Any]] = Field(default_factory=dict)
    objectives: dict[str, float] = Field(default_factory=dict)
    constraints: dict[str, float] = Field(default_factory=dict)
    feasible: bool | None = None
    passes: list[PassSummary] = Field(default_factory=list)
    model_key: str | None = None
    seconds: float = 0.0
    evaluation_seconds: float = 0.0
    orchestration_seconds: float = 0.0
    fail_reason: str | None = None
    prune_reason: str | None = None
    duplicate_of: int | None = None


def read_record(trial: Any) -> TrialRecord:
    """The record of a frozen Optuna trial (a bare one for trials that died before writing it)."""
    raw = trial.user_attrs.get(RECORD_ATTR)
    record = TrialRecord.model_validate(raw) if raw else TrialRecord(number=trial.number)
    record.number = trial.number
    record.state = trial.state.name
    if not record.point:
        record.point = dict(trial.params)
    if trial.state.name == "FAIL" and not record.fail_reason:
        record.fail_reason = trial.user_attrs.get("fail_reason") or "the worker stopped during this trial (no heartbeat)"
    return record
