"""What a study stores, typed: ``StudyMeta`` (one per study) and ``TrialRecord`` (one per trial).

This module is the only place that reads or writes Optuna user attributes. Every other module
(selection, report, export, the CLI) gets these types, so a field has one name and one default.
The stored form carries ``schema_version``; a study written by an older autotune (the attributes
``objectives``/``bounds``/``provider``/``config``/``autotune_baseline``, no version) is read through
:func:`upgrade_meta`, so an old ``study.db`` still opens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from autotune.evaluation.goals import Bound

__all__ = [
    "CONSTRAINTS_ATTR", "FINAL_ATTR", "META_ATTR", "PRECISION_ATTR", "RECORD_ATTR", "SCHEMA_VERSION", "BaseModelInfo", "Bound",
    "BoundSpec", "MetricKind",
    "DataSummary", "MetricValue", "ObjectiveSpec", "Owner", "PassSummary", "StudyFingerprint", "StudyMeta", "StudyPrecision",
    "StudyView", "TrialRecord", "TrialState",
    "metric_kind",
    "read_constraints", "read_meta", "read_record", "write_constraints", "write_final", "write_final_baseline", "write_meta",
    "write_record",
]

# 3: the meta has a fingerprint (a study of schema 2 reads with none, and gets one on its next run).
SCHEMA_VERSION = 3
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
# Schema 1 (no version): the study's facts as separate attributes.
_V1_ATTRS = ("objectives", "bounds", "provider", "config", "autotune_baseline")

MetricKind = Literal["accuracy", "latency", "size", "memory", "other"]


def metric_kind(key: str) -> MetricKind:
    """What a metric measures, from its id ``<type>-<sub_type>`` (Olive's naming)."""
    metric_type, _, sub_type = key.partition("-")
    if metric_type == "accuracy":
        return "accuracy"
    if metric_type == "latency":
        return "latency"
    if metric_type == "footprint":
        return "size" if sub_type.startswith("size") else "memory"
    return "other"


class _Stored(BaseModel):
    # Newer fields written by a newer autotune are kept, not refused: an older reader still opens it.
    model_config = ConfigDict(extra="allow")


class MetricValue(_Stored):
    """One measured metric as stored (the evaluator's ``Metric.to_dict()``)."""

    value: float
    unit: str = ""
    higher_is_better: bool = True
    name: str = ""
    n: int | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    flag: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    label: str | None = None  # readable, e.g. "decode p50 (ms/token)"

    @property
    def title(self) -> str:
        """The readable name with its unit, for cards, reports and the terminal."""
        return self.label or self.name or "metric"


class ObjectiveSpec(_Stored):
    metric: str
    higher_is_better: bool
    unit: str = ""
    kind: MetricKind = "other"
    label: str = ""

    @property
    def direction(self) -> str:
        return "maximize" if self.higher_is_better else "minimize"

    @property
    def title(self) -> str:
        """The readable name the trials table shows ("decode p50 (ms/token)"); the id stays in the CSVs."""
        return self.label or self.metric


# The stored bound is the search's own type (one type per concept); the old name stays for imports.
BoundSpec = Bound


class DataSummary(_Stored):
    """A data config as the study used it: split sizes, the prompt template and the labels."""

    train: int = 0
    validation: int = 0
    test: int = 0
    template: str = ""
    prompt_template: str = ""  # the template up to the answer
    labels: list[str] | None = None
    files: list[str] = Field(default_factory=list)
    example: str = ""  # one training row's input, for the card's usage snippet
    terminator: str = ""  # the text template's text after the answer (a stop rule); "" for a chat template
    chat: bool = False  # rendered by the tokenizer's chat template (user turn: input_column)
    system_prompt: str | None = None


class StudyFingerprint(_Stored):
    """What every trial's scores depend on besides its searched point (:mod:`autotune.search.fingerprint`):
    each data config's template and splits (row counts and a sha256 of the rows), the evaluator's metrics
    and provider, and each pass's fixed (not searched) settings, by the pass's prefix in a point."""

    data: dict[str, dict[str, Any]] = Field(default_factory=dict)
    evaluator: dict[str, Any] = Field(default_factory=dict)
    passes: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # The base model candidates of a list input_model (name, model_path, gguf_file, revision); None in
    # fingerprints written before they were kept, and for a single input model.
    models: list[dict[str, Any]] | None = None


class BaseModelInfo(_Stored):
    """One candidate base model of a study that searches the base: its name, where it came from, and its
    Hugging Face id when known (the card's ``base_model``: never a local path)."""

    name: str
    model_path: str = ""
    gguf_file: str | None = None
    model_id: str | None = None


class StudyMeta(_Stored):
    """What the study is: objectives, bounds, baseline, the config it ran (secrets redacted), where.

    ``baseline`` is the input model measured like the trials (ONNX fp32 on the study's provider);
    ``baseline_reference`` the input model in PyTorch, an extra reference row only.
    """

    schema_version: int = SCHEMA_VERSION
    mode: Literal["search", "single"] = "search"
    objectives: list[ObjectiveSpec] = Field(default_factory=list)
    bounds: list[BoundSpec] = Field(default_factory=list)
    baseline: dict[str, MetricValue] = Field(default_factory=dict)
    baseline_kind: str = "pytorch"  # "onnx-fp32" when the like-for-like baseline was measured
    baseline_reference: dict[str, MetricValue] = Field(default_factory=dict)
    data: dict[str, DataSummary] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)
    provider: str = ""
    device: dict[str, str] = Field(default_factory=dict)
    versions: dict[str, str] = Field(default_factory=dict)
    grid_enqueued: bool = False
    fingerprint: StudyFingerprint | None = None  # None: a study written before fingerprints were kept
    # A study that searches the base model: its candidates, and each one's own baseline and bounds (a
    # trial is compared with its own base's baseline; ``baseline``/``bounds`` are the first candidate's).
    bases: list[BaseModelInfo] = Field(default_factory=list)
    base_baselines: dict[str, dict[str, MetricValue]] = Field(default_factory=dict)
    base_bounds: dict[str, list[BoundSpec]] = Field(default_factory=dict)

    def base_info(self, name: str | None) -> BaseModelInfo | None:
        return next((b for b in self.bases if b.name == name), None)

    def objective(self, kind: MetricKind) -> ObjectiveSpec | None:
        """The first objective of that kind (by priority), if any."""
        return next((o for o in self.objectives if o.kind == kind), None)

    @property
    def output_dir(self) -> Path:
        return Path((self.config.get("engine") or {}).get("output_dir") or ".")

    @property
    def cache_dir(self) -> Path:
        return Path((self.config.get("engine") or {}).get("cache_dir") or "cache")


class PassSummary(_Stored):
    name: str
    type: str
    key: str
    seconds: float
    cache_hit: bool


class Owner(_Stored):
    """The process that runs a trial: a rerun on the same host can tell a dead owner at once.

    A pid means something only in its PID namespace: containers that share the host name and boot id
    can each have their own, so a pid is looked up only from the owner's namespace; from another one
    only the heartbeat tells (``engine.heartbeat_seconds``).
    """

    host: str
    boot_id: str
    pid: int
    pid_namespace: str | None = None  # e.g. "pid:[4026531836]"; None in records written before it was kept
    # Whether it is alive: autotune.search.recovery (this_owner, checkable_here, is_dead_here).


TrialState = Literal["RUNNING", "COMPLETE", "PRUNED", "FAIL", "WAITING"]


class TrialRecord(_Stored):
    number: int
    state: TrialState = "RUNNING"  # Optuna's trial state, by name
    point: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    metrics: dict[str, MetricValue] = Field(default_factory=dict)
    objectives: dict[str, float] = Field(default_factory=dict)
    constraints: dict[str, float] = Field(default_factory=dict)
    feasible: bool | None = None
    passes: list[PassSummary] = Field(default_factory=list)
    model_key: str | None = None
    # Where each pass's output is, by pass name: the shared store's URL of the entry (engine.artifact_store),
    # else the cache folder of the machine that ran the trial.
    artifacts: dict[str, str] = Field(default_factory=dict)
    seconds: float = 0.0
    evaluation_seconds: float = 0.0
    orchestration_seconds: float = 0.0
    fail_reason: str | None = None
    prune_reason: str | None = None
    duplicate_of: int | None = None
    owner: Owner | None = None
    log_file: str | None = None  # the traceback of a failed trial
    # After the study (from FINAL_ATTR): the test split's metrics, and latency re-measured interleaved.
    test_metrics: dict[str, MetricValue] = Field(default_factory=dict)
    remeasured: dict[str, MetricValue] = Field(default_factory=dict)
    # The base model of the trial (its candidate's name), when the study searches the base model.
    base: str | None = None
    # A DropLayers pass's summary: which blocks went (of how many), by what method.
    dropped_layers: dict[str, Any] | None = None

    @property
    def structure_key(self) -> str | None:
        """The structure key its speed and memory were measured under (autotune.evaluation.structure; None:
        measured per model, or not measured)."""
        for metric in self.metrics.values():
            key = metric.details.get("structure_key")
            if isinstance(key, str):
                return key
        return None


def write_constraints(trial: Any, violations: list[float]) -> None:
    """The trial's constraint violations, in bound order, where Optuna's constraints_func reads them."""
    trial.set_user_attr(CONSTRAINTS_ATTR, list(violations))


def read_constraints(trial: Any) -> list[float] | None:
    """What :func:`write_constraints` stored (None: nothing, e.g. a trial stopped before it was measured)."""
    values = getattr(trial, "user_attrs", {}).get(CONSTRAINTS_ATTR)
    return [float(v) for v in values] if values else None


def write_record(trial: Any, record: TrialRecord) -> None:
    trial.set_user_attr(RECORD_ATTR, record.model_dump(mode="json", exclude_none=False))


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
    """The study's training-precision decisions (autotune.passes.precision_probe), kept with the study so every
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
    study.set_user_attr(META_ATTR, meta.model_dump(mode="json"))


def read_meta(study: Any) -> StudyMeta:
    """The study's meta, upgrading a schema-1 study (separate attributes, no version) on the fly."""
    attrs = study.user_attrs
    if META_ATTR in attrs:
        return StudyMeta.model_validate(attrs[META_ATTR])
    return upgrade_meta(attrs)


def upgrade_meta(attrs: dict[str, Any]) -> StudyMeta:
    """Schema 1 -> 2: the same facts, typed; objectives get a kind from their metric id."""
    objectives = [ObjectiveSpec(**{**o, "kind": metric_kind(o["metric"])}) for o in attrs.get("objectives", [])]
    return StudyMeta(
        schema_version=1,
        objectives=objectives,
        bounds=[BoundSpec(**b) for b in attrs.get("bounds", [])],
        baseline={k: MetricValue(**v) for k, v in (attrs.get("autotune_baseline") or {}).items()},
        config=attrs.get("config", {}),
        provider=attrs.get("provider", ""),
        grid_enqueued=bool(attrs.get("grid_enqueued", False)),
    )


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
