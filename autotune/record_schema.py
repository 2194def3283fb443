"""The stored form of a study, typed: the pydantic models that ``autotune.records`` reads from and writes to Optuna's
user attributes (``StudyMeta``, one per study; ``TrialRecord``, one per trial; what they hold). No I/O here:
records.py is the only module that touches the attributes, and re-exports every name of this one."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from autotune.evaluation.goals import Bound

__all__ = [
    "SCHEMA_VERSION", "BaseModelInfo", "Bound", "BoundSpec", "DataSummary", "MetricKind", "MetricValue", "ObjectiveSpec",
    "Owner", "PassSummary", "StudyFingerprint", "StudyMeta", "TrialRecord", "TrialState", "metric_kind",
]

# What each version changed, and the step that reads the one before: autotune.record_migrations.
SCHEMA_VERSION = 4

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
    """One measured value with its unit and direction (accuracy: with n and a 95% interval): what an evaluator returns
    (``autotune.evaluation.Metric`` is this class), the cache stores and the trial records and reports hold."""

    value: float
    unit: str = ""
    higher_is_better: bool = True
    name: str = ""
    n: int | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    flag: str | None = None  # set when the measurement is not trustworthy (e.g. high variation)
    details: dict[str, Any] = Field(default_factory=dict)
    label: str | None = None  # readable, e.g. "decode p50 (ms/token)"; None in records older than it

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
    # What each pass said of its run (``Pass.summary``), by pass name: e.g. which blocks a depth pass removed, of how many.
    summaries: dict[str, dict[str, Any]] = Field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def structure_key(self) -> str | None:
        """The structure key its speed and memory were measured under (autotune.evaluation.structure; None:
        measured per model, or not measured)."""
        for metric in self.metrics.values():
            key = metric.details.get("structure_key")
            if isinstance(key, str):
                return key
        return None
