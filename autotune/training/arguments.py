"""transformers' TrainingArguments for the LoRA and QLoRA passes: which keys a config may set, which
are refused (with why), and the keyword arguments the Trainer finally gets."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from autotune.errors import ConfigError
from autotune.training.precision import PRECISIONS, mixed_precision

__all__ = [
    "OWN_TRAINING_ARGS", "PRECISIONS", "RENAMED_TRAINING_ARGS", "TrainingArgs", "check_training_args",
    "mixed_precision", "refused_training_arg", "training_argument_names", "training_argument_values", "training_arguments",
]


class TrainingArgs(BaseModel):
    """transformers ``TrainingArguments``: the common ones typed; any other valid field is passed on."""

    model_config = ConfigDict(extra="allow")
    seed: int = 42
    data_seed: int | None = None
    per_device_train_batch_size: int = Field(8, gt=0)
    per_device_eval_batch_size: int = Field(8, gt=0)
    gradient_accumulation_steps: int = Field(1, gt=0)
    num_train_epochs: float = Field(1.0, gt=0)
    max_steps: int = -1
    logging_steps: float = Field(10, gt=0)
    warmup_steps: float = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    lr_scheduler_type: str = "linear"
    max_grad_norm: float = 1.0
    optim: str = "adamw_torch"
    gradient_checkpointing: bool = False
    eval_steps: float | None = None

    @model_validator(mode="after")
    def _precision(self) -> TrainingArgs:
        """``precision`` as transformers' own flags: the same fine-tune (and cache key) as ``bf16``/``fp16`` say it;
        ``auto`` is leaving them unset."""
        extra = self.model_extra if self.model_extra is not None else {}
        if "precision" not in extra:
            return self
        value = extra.pop("precision")
        if value not in PRECISIONS:
            raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got {value!r}")
        forced = [k for k in ("bf16", "fp16") if extra.get(k) is not None]
        if value != "auto" and forced:
            raise ValueError(f"precision and {forced[0]} are both set; keep one (precision: {value} says it all)")
        if value in ("bf16", "fp32"):
            extra["bf16"] = value == "bf16"
        elif value == "fp16":
            extra["fp16"] = True
        return self

    @field_validator("max_steps")
    @classmethod
    def _steps(cls, value: int) -> int:
        if value == 0 or value < -1:
            raise ValueError("expected a positive number of steps (or -1 for epochs)")
        return value


# TrainingArguments autotune cannot honour, each with the one-line reason a config using it is refused
# (every other valid key is passed on to TrainingArguments as it is).
_NO_CHECKPOINTS = "autotune keeps only the final adapter (in its cache); no checkpoints are saved"
_OWN_OUTPUT = "autotune decides where outputs go (engine.cache_dir and engine.output_dir)"
REFUSED_TRAINING_ARGS: dict[str, str] = {
    "output_dir": _OWN_OUTPUT, "overwrite_output_dir": _OWN_OUTPUT, "logging_dir": _OWN_OUTPUT, "run_name": _OWN_OUTPUT,
    "project": _OWN_OUTPUT,
    "save_strategy": _NO_CHECKPOINTS, "save_steps": _NO_CHECKPOINTS, "save_total_limit": _NO_CHECKPOINTS,
    "save_only_model": _NO_CHECKPOINTS, "save_on_each_node": _NO_CHECKPOINTS, "resume_from_checkpoint": _NO_CHECKPOINTS,
    "restore_callback_states_from_checkpoint": _NO_CHECKPOINTS, "enable_jit_checkpoint": _NO_CHECKPOINTS,
    "load_best_model_at_end": f"{_NO_CHECKPOINTS}; stop hopeless trials with engine.search_strategy.early_stop instead",
    "metric_for_best_model": "only used with load_best_model_at_end, which autotune cannot honour (no checkpoints)",
    "greater_is_better": "only used with load_best_model_at_end, which autotune cannot honour (no checkpoints)",
    "push_to_hub": "autotune never uploads models", "hub_model_id": "autotune never uploads models",
    "hub_token": "autotune never uploads models", "hub_strategy": "autotune never uploads models",
    "hub_private_repo": "autotune never uploads models", "hub_always_push": "autotune never uploads models",
    "hub_revision": "autotune never uploads models",
    "report_to": "autotune records training in its own trial records (only 'none' is accepted)",
    "use_cpu": "set engine.device (auto, cpu or cuda) instead",
    "no_cuda": "set engine.device (auto, cpu or cuda) instead",
    "disable_tqdm": "autotune shows training progress itself",
    "remove_unused_columns": "autotune's collator needs the columns it builds",
    "do_train": "has no effect in transformers' Trainer (only example scripts read it)",
    "do_eval": "has no effect in transformers' Trainer; set eval_strategy",
    "do_predict": "has no effect in transformers' Trainer (only example scripts read it)",
    "train_sampling_strategy": "set by autotune from group_by_length (true: 'group_by_length'); use that key",
}
# Older spellings transformers 5 no longer has, renamed to its own key (the seed sample uses them).
RENAMED_TRAINING_ARGS = {"evaluation_strategy": "eval_strategy"}
# Keys autotune handles itself before TrainingArguments sees them.
OWN_TRAINING_ARGS = {"group_by_length", "bf16", "fp16"}


def refused_training_arg(key: str, value: Any) -> str | None:
    """Why ``key: value`` cannot be honoured (None: it is passed on)."""
    if key == "report_to" and value in ("none", [], None):
        return None
    return REFUSED_TRAINING_ARGS.get(key)


@functools.cache
def training_argument_names() -> frozenset[str]:
    """Field names of transformers' TrainingArguments, read from its source so that validating a
    config does not import transformers, peft and torch (seconds); falls back to importing it."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec("transformers")
    if spec and spec.submodule_search_locations:
        source = Path(next(iter(spec.submodule_search_locations))) / "training_args.py"
        try:
            tree = ast.parse(source.read_text())
            for node in tree.body:
                if isinstance(node, ast.ClassDef) and node.name == "TrainingArguments":
                    names = {n.target.id for n in node.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
                    if names:
                        return frozenset(names)
        except (OSError, SyntaxError):
            pass
    import dataclasses

    from transformers import TrainingArguments

    return frozenset(f.name for f in dataclasses.fields(TrainingArguments))


def check_training_args(args: TrainingArgs, *, validation_size: int, origin: str) -> None:
    """Every training_args key is passed on to TrainingArguments or refused here with its reason
    (``validation_size``: the pass's held-out rows, which an eval_strategy needs)."""
    from autotune.errors import did_you_mean

    valid = training_argument_names()
    values = args.model_dump(exclude_none=True)
    for key, value in values.items():
        where = f"{origin}.training_args.{key}"
        reason = refused_training_arg(key, value)
        if reason:
            raise ConfigError(where, f"cannot be honoured: {reason}")
        if key not in valid and key not in OWN_TRAINING_ARGS and key not in RENAMED_TRAINING_ARGS:
            raise ConfigError(where, f"unknown training argument{did_you_mean(key, valid)}")
        if key in OWN_TRAINING_ARGS and not isinstance(value, bool):
            raise ConfigError(where, f"expected true or false, got {value!r}")
    for old, new in RENAMED_TRAINING_ARGS.items():
        if old in values and new in values:
            raise ConfigError(f"{origin}.training_args.{old}", f"is transformers' older name of '{new}', which is also set; keep one")
    if values.get("bf16") and values.get("fp16"):
        raise ConfigError(f"{origin}.training_args.fp16", "bf16 and fp16 are both true; keep one")
    strategy = values.get("eval_strategy", values.get("evaluation_strategy", "no"))
    if strategy != "no" and validation_size == 0:
        raise ConfigError(f"{origin}.training_args.eval_strategy",
                          f"'{strategy}' needs validation rows, but validation_size is 0")


def training_arguments(args: TrainingArgs, output: Path, *, learning_rate: float, origin: str, device: str = "cpu",
                       precision: str | None = None) -> Any:
    from transformers import TrainingArguments

    return TrainingArguments(**training_argument_values(args, output, learning_rate=learning_rate, origin=origin,
                                                        device=device, precision=precision))


def training_argument_values(args: TrainingArgs, output: Path, *, learning_rate: float, origin: str,
                             device: str = "cpu", precision: str | None = None) -> dict[str, Any]:
    """The keyword arguments of TrainingArguments: the user's, renamed where transformers renamed them,
    and autotune's own (output, device, mixed precision: ``precision`` when given, e.g. the CPU probe's
    choice, else :func:`autotune.training.precision.mixed_precision`)."""
    valid = training_argument_names()
    values = args.model_dump(exclude_none=True)
    for old, new in RENAMED_TRAINING_ARGS.items():
        if old in values:
            values[new] = values.pop(old)
    for key in list(values):
        reason = refused_training_arg(key, values[key])
        if reason:
            raise ConfigError(f"{origin}.training_args.{key}", f"cannot be honoured: {reason}")
        if key not in valid and key not in OWN_TRAINING_ARGS:
            raise ConfigError(f"{origin}.training_args.{key}", "unknown training argument")
    values.pop("report_to", None)
    if values.pop("group_by_length", False):  # transformers 5's spelling of the same sampler
        values["train_sampling_strategy"] = "group_by_length"
    values.pop("bf16", None)
    values.pop("fp16", None)
    precision = precision or mixed_precision(args, device)
    # A NaN/inf loss must fail the trial, not be averaged away in the logs.
    values.setdefault("logging_nan_inf_filter", False)
    if "activation_checkpointing" in valid and "gradient_checkpointing" in values:  # transformers 5's name
        values["activation_checkpointing"] = values.pop("gradient_checkpointing")
    return {
        "output_dir": str(output),
        "learning_rate": learning_rate,
        "report_to": "none",
        "save_strategy": "no",
        "disable_tqdm": True,
        "remove_unused_columns": False,
        "use_cpu": device == "cpu",
        "bf16": precision == "bf16",
        "fp16": precision == "fp16",
        **values,
    }
