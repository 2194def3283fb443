"""The canonical, typed form of a run config.

Older shapes (the seed sample's ``PyTorchModel``/``hf_config``, pass parameters under ``config``,
nested ``params``) are converted to this form by :mod:`autotune.config.legacy` before validation.
Every model forbids unknown keys so a misspelt key is an error, not a silent default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, field_validator, model_serializer, model_validator

PROVIDERS = ("CPUExecutionProvider", "CUDAExecutionProvider", "DmlExecutionProvider")
SAMPLERS = ("tpe", "nsga2", "random", "grid", "gp", "auto")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class InputModelConfig(Strict):
    """A Hugging Face folder (safetensors) or a GGUF file converted once to one; or a Hugging Face id
    (``org/name``, see :mod:`autotune.models.source`) at ``revision`` (a branch, tag or commit)."""

    type: Literal["HfModel", "GGUFModel"] = "HfModel"
    model_path: Path
    gguf_file: str | None = None
    revision: str = Field("main", min_length=1)
    task: Literal["text-generation"] = "text-generation"
    trust_remote_code: bool = False
    # The model's name, when the config gives one (a one-item ``input_model`` list keeps its candidate's).
    # Left out of a dump when unset, so a config without one dumps (and is stored and compared) as before.
    name: str | None = Field(None, min_length=1)

    @model_serializer(mode="wrap")
    def _unset_name_left_out(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        if isinstance(data, dict) and data.get("name", "") is None:
            del data["name"]
        return data


class CandidateModelConfig(InputModelConfig):
    """One base model of a list ``input_model``: the study samples among the candidates by ``name``
    (given, else the file or folder name: ``org/name`` -> ``name``, a GGUF -> its stem)."""

    name: str = Field(min_length=1)

    def as_input_model(self) -> InputModelConfig:
        """The candidate as the single ``input_model`` a run of that base has, its name kept."""
        return InputModelConfig.model_validate(self.model_dump())


class DataConfig(Strict):
    """A local JSON/JSON-lines/CSV/Parquet file, a text template and a held-out split."""

    name: str
    type: Literal["HuggingfaceContainer"] = "HuggingfaceContainer"
    data_name: Literal["json", "csv", "parquet"]
    data_files: list[Path]
    split: str = "train"
    dataset_type: Literal["corpus"] = "corpus"
    text_cols: list[str] | None = None
    text_template: str | None = None
    # Render text_cols [prompt, answer] as a user and an assistant turn through the tokenizer's chat template.
    chat_template: bool = False
    system_prompt: str | None = None
    corpus_strategy: Literal["line-by-line", "join"] = "line-by-line"
    source_max_len: int = Field(1024, gt=0)
    pad_to_max_len: bool = False
    use_attention_mask: bool = True
    # Held-out rows: a count (>= 1) or a fraction in (0, 1). The evaluators read this split.
    eval_dataset_size: float = Field(0.2, gt=0)
    # Test rows (a count or a fraction), touched once at the end of a study for the Pareto set and the
    # selected model; never for objectives or selection. None: no test split.
    test_dataset_size: float | None = Field(None, gt=0)
    split_seed: int = 0
    max_samples: int | None = Field(None, gt=0)

    @field_validator("data_files", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, (str, Path)) else value


class PassConfig(Strict):
    """One pass: its registered type and its raw parameters (validated by the pass itself)."""

    type: str
    params: dict[str, Any] = Field(default_factory=dict)
    # Where the parameters sit in the user's file, for error messages ("passes.lora.config").
    origin: str = ""
    # A pass group: the study chooses one of these (each with its own, conditional, parameters).
    alternatives: list[PassConfig] = Field(default_factory=list)


class GoalConfig(Strict):
    type: Literal[
        "threshold",
        "min-improvement",
        "max-degradation",
        "percent-min-improvement",
        "percent-max-degradation",
    ]
    value: float


class SubMetricConfig(Strict):
    name: str
    priority: int = 1
    higher_is_better: bool | None = None
    goal: GoalConfig | None = None


class MetricConfig(Strict):
    name: str
    type: str
    sub_types: list[SubMetricConfig]
    data_config: str | None = None
    user_config: dict[str, Any] = Field(default_factory=dict)


class EvaluatorConfig(Strict):
    metrics: list[MetricConfig] = Field(default_factory=list)


class _StudyRule(Strict):
    """A rule that is on by default, and off for the grid sampler (whose point is to measure every point)
    unless the config sets it: ``enabled``, or any of its settings, which then apply (as they do with every
    other sampler). A rule to keep off with the grid needs no settings; ``enabled: false`` turns it off
    whatever else is set."""

    enabled: bool = True

    @model_validator(mode="after")
    def _settings_turn_it_on(self) -> _StudyRule:
        if self.model_fields_set and "enabled" not in self.model_fields_set:
            self.enabled = True  # written settings are meant to apply: counted as set (the grid reads model_fields_set)
        return self


class EarlyStopConfig(_StudyRule):
    """Median rule over stored intermediate eval losses (works for multi-objective studies)."""

    warmup_steps: int = Field(20, ge=0)
    min_trials: int = Field(3, ge=1)
    # Stop a trial whose loss is this fraction worse than the median of earlier trials at that step:
    # "clearly worse", since an early loss only loosely predicts the final accuracy.
    margin: float = Field(0.25, ge=0)


class MultiFidelityConfig(_StudyRule):
    """Score accuracy on a first slice of the validation rows; a trial whose optimistic accuracy (the
    slice's exact one-sided 97.5% bound from its per-row outcomes) cannot reach the current Pareto front
    at its measured cost stops there. A metric without an interval never stops a trial (search/fidelity.py)."""

    # The slice: a share of the validation rows (< 1) or a count; at least min_rows rows.
    first_rows: float = Field(0.3, gt=0)
    min_rows: int = Field(30, ge=1)


class SearchStrategyConfig(Strict):
    execution_order: Literal["joint"] = "joint"
    sampler: Literal["tpe", "nsga2", "random", "grid", "gp", "auto"] = "tpe"
    max_samples: int | None = Field(None, gt=0)
    max_time: float | None = Field(None, gt=0)
    seed: int = 0
    stop_when_goals_met: bool = False
    early_stop: EarlyStopConfig = Field(default_factory=EarlyStopConfig)
    multi_fidelity: MultiFidelityConfig = Field(default_factory=MultiFidelityConfig)
    # Name of a reusable space in search_spaces/<name>.yaml, merged under the passes' own values.
    search_space: str | None = None


class SelectionConfig(Strict):
    policy: str = "max-accuracy"  # a name in autotune.selection.POLICIES
    min_accuracy: float | None = None
    latency_budget_ms: float | None = None
    # The policy's own settings (its ``Options``: autotune.selection.policies), checked against the policy named here.
    options: dict[str, Any] = Field(default_factory=dict)
    weights: dict[str, float] = Field(default_factory=dict)  # short for options.weights (the weighted policy)
    # Among candidates whose accuracy a paired bootstrap cannot tell apart, take the cheapest.
    prefer_cheaper: bool = True
    # Before selecting, re-measure the Pareto set's latency this many rounds, interleaved (0: off).
    remeasure_rounds: int = Field(3, ge=0)

    @field_validator("policy")
    @classmethod
    def _registered_policy(cls, value: str) -> str:
        from autotune.selection.policies import POLICIES

        if value not in POLICIES:
            raise ValueError(f"expected one of {', '.join(n for n, _ in POLICIES.items())}, got \"{value}\"")
        return value

    @model_validator(mode="after")
    def _options_of_the_policy(self) -> SelectionConfig:
        from autotune.selection.policies import policy_options

        if self.weights and "weights" in self.options:
            raise ValueError("give the weights once: options.weights or weights")
        # A setting the policy does not have is refused here (ConfigError: its full key), never ignored.
        policy_options(self.policy, self.given_options(), where="engine.selection.options")
        return self

    def given_options(self) -> dict[str, Any]:
        """``options``, with ``weights`` (their shorthand) folded in."""
        return {**self.options, **({"weights": self.weights} if self.weights else {})}


class EngineConfig(Strict):
    search_strategy: SearchStrategyConfig | None = None
    execution_providers: list[Literal["CPUExecutionProvider", "CUDAExecutionProvider", "DmlExecutionProvider"]] = (
        Field(default_factory=lambda: ["CPUExecutionProvider"], min_length=1)
    )
    cache_dir: Path = Path("cache")
    output_dir: Path = Path("results/run")
    log_severity_level: int = Field(1, ge=0, le=4)
    evaluator: str | None = None
    evaluate_input_model: bool = True
    # Besides the like-for-like baseline (the input model as fp32 ONNX), also measure the input model
    # in PyTorch eager as a labelled reference row (another runtime: never used for goals or ratios).
    pytorch_reference: bool = True
    storage: str | None = None
    study_name: str | None = None
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    trial_timeout: float | None = Field(None, gt=0)
    # A worker writes a heartbeat this often; a RUNNING trial silent for 3x this is stale (failed, retried once).
    heartbeat_seconds: float = Field(20, gt=0)
    cache_max_gb: float | None = Field(None, gt=0)
    # A store shared by every worker (a shared folder, file://PATH or s3://bucket/prefix): the cache reads
    # through it and writes to it, and one worker builds each entry (autotune/artifacts.py).
    artifact_store: str | None = None
    # Where LoRA/QLoRA train: auto = CUDA when torch sees a GPU, else the CPU.
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @field_validator("device")
    @classmethod
    def _device_visible(cls, value: str) -> str:
        # Only "cuda" needs torch (imported lazily): a CPU or auto config validates without it.
        if value == "cuda":
            from autotune.device import cuda_missing

            reason = cuda_missing()
            if reason:
                raise ValueError(reason)
        return value

    @field_validator("execution_providers")
    @classmethod
    def _providers_run_here(cls, value: list[str]) -> list[str]:
        from autotune.device import provider_platform_problem

        for name in value:
            reason = provider_platform_problem(name)
            if reason:
                raise ValueError(reason)
        return value

    @field_validator("artifact_store")
    @classmethod
    def _store_url(cls, value: str | None) -> str | None:
        from autotune.artifacts import check_store_url

        return check_store_url(value) if value else None

    @field_validator("search_strategy", mode="before")
    @classmethod
    def _false_means_single_run(cls, value: Any) -> Any:
        if value is False or value is None:
            return None
        if value is True:
            return {}
        return value

    @property
    def provider(self) -> str:
        return self.execution_providers[0]


class RunConfig(Strict):
    """A whole run: model, data, ordered passes, evaluators and engine settings."""

    input_model: InputModelConfig
    # A list ``input_model`` of two or more base models: the study's ``input_model`` parameter chooses
    # one per trial; ``input_model`` is then the first (the default base). Empty for one model.
    input_models: list[CandidateModelConfig] = Field(default_factory=list)
    data_configs: list[DataConfig] = Field(default_factory=list)
    passes: dict[str, PassConfig] = Field(default_factory=dict)
    evaluators: dict[str, EvaluatorConfig] = Field(default_factory=dict)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    # Directory of the config file: relative paths in the config were resolved against it.
    config_dir: Path = Path(".")

    @model_validator(mode="after")
    def _names_resolve(self) -> RunConfig:
        names = [d.name for d in self.data_configs]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"data config name '{sorted(dupes)[0]}' is used twice")
        return self

    @property
    def base_names(self) -> list[str]:
        """The candidates' names when the base model is searched, else empty."""
        return [c.name for c in self.input_models]

    def base_index(self, name: str) -> int:
        return next(i for i, c in enumerate(self.input_models) if c.name == name)

    def for_base(self, name: str | None) -> RunConfig:
        """This config as a run of one base model: ``input_model`` set to the candidate ``name`` (None:
        the default base, this config itself)."""
        if name is None or not self.input_models or name == self.input_models[0].name:
            return self
        return self.model_copy(update={"input_model": self.input_models[self.base_index(name)].as_input_model()})

    def data_config(self, name: str) -> DataConfig:
        for data in self.data_configs:
            if data.name == name:
                return data
        raise KeyError(name)
