"""LoRA fine-tuning with peft and transformers' Trainer; the output is a saved adapter."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from autotune.context import KeyContext, PassContext, StepContext
from autotune.device import record_peak_memory
from autotune.errors import ConfigError
from autotune.models.handle import ModelHandle
from autotune.models.loading import load_causal_lm, load_tokenizer
from autotune.models.module_names import matrix_leaves
from autotune.passes.base import ModelFacts, Pass, PassParams, register_pass, searchable
from autotune.training.arguments import (  # noqa: F401  (re-exported: the training arguments of this pass)
    OWN_TRAINING_ARGS,
    RENAMED_TRAINING_ARGS,
    TrainingArgs,
    check_training_args,
    refused_training_arg,
    training_argument_names,
    training_argument_values,
    training_arguments,
)
from autotune.training.batches import PadToLongest, tokenize_rows
from autotune.training.precision import mixed_precision

log = logging.getLogger("autotune")

DEFAULT_TARGETS = ["q_proj", "v_proj"]


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


class LoRAParams(PassParams):
    ALIASES: ClassVar[dict[str, str]] = {"lora_r": "r", "lora_alpha": "alpha"}
    CONDITIONS: ClassVar[dict[str, tuple[str, tuple[Any, ...]]]] = {"alpha": ("alpha_ratio", (None,))}

    r: int = searchable(16, space=[4, 8, 16, 32], gt=0)
    # alpha as a multiple of r (alpha = r x alpha_ratio); when set, it replaces alpha.
    alpha_ratio: float | None = searchable(None, space=[1.0, 2.0], gt=0)
    alpha: float = searchable(32, space=[16, 32, 64], gt=0)
    lora_dropout: float = searchable(0.05, space=[0.0, 0.05, 0.1], ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = searchable(
        DEFAULT_TARGETS, space=[["q_proj", "v_proj"], ["q_proj", "k_proj", "v_proj", "o_proj"], "all-linear"]
    )
    learning_rate: float = searchable(2e-4, space={"low": 5e-5, "high": 1e-3, "log": True}, gt=0)
    train_data_config: str | None = None
    # Loss on the answer only (classification) or on the whole text; None picks by the data.
    loss_on: Literal["answer", "all"] | None = None
    # Rows carved from the end of the training split for the intermediate eval loss (never trained on).
    validation_size: int = Field(32, ge=0)
    # Evaluate the validation loss every N optimizer steps for early stopping (0 = never); only when a study's
    # early-stopping rule reads it (off for a grid unless enabled): otherwise no validation pass runs.
    report_every: int = Field(10, ge=0)
    training_args: TrainingArgs = Field(default_factory=TrainingArgs)

    @property
    def effective_alpha(self) -> float:
        return self.r * self.alpha_ratio if self.alpha_ratio is not None else self.alpha

    def applies(self, name: str) -> bool:
        if name == "alpha_ratio":
            return self.alpha_ratio is not None  # unset: the cache keys stay those of plain alpha
        return super().applies(name)

    @classmethod
    def prepare(cls, params: dict[str, Any], origin: str) -> dict[str, Any]:
        """Lift ``training_args.learning_rate`` to the searchable top-level ``learning_rate``."""
        params = dict(params)
        params.pop("eval_dataset_size", None)  # moved to the data config by the loader
        args = params.get("training_args")
        if isinstance(args, dict) and "learning_rate" in args:
            args = dict(args)
            if "learning_rate" in params:
                raise ConfigError(f"{origin}.training_args.learning_rate", "is also set as 'learning_rate'; keep one")
            params["learning_rate"] = args.pop("learning_rate")
            params["training_args"] = args
        return params


def target_matches(target: str, module_name: str) -> bool:
    """peft's rule for a list of targets (``check_target_module_exists``): the full name or its last dotted parts."""
    return module_name == target or module_name.endswith(f".{target}")


def unmatched_target(targets: list[str] | str, module_names: Iterable[str]) -> str | None:
    """The first target that matches no module name (``all-linear`` is peft's own choice: always None)."""
    if not isinstance(targets, list):
        return None
    names = list(module_names)
    return next((t for t in targets if not any(target_matches(t, name) for name in names)), None)


def no_match_error(where: str, target: str, layers: Iterable[str]) -> ConfigError:
    return ConfigError(where, f"'{target}' matches no module of this model (its layers with a weight matrix: {', '.join(layers)})")


def check_targets(model: Any, targets: list[str] | str, where: str) -> None:
    """Each LoRA target must match a module (peft silently skips one that does not while another matches)."""
    # peft's own matching over every module, so that layers of other kinds peft adapts (GPT-2's Conv1D,
    # embeddings) still count; the message lists those with a weight matrix (as validate reads them).
    modules = dict(model.named_modules())
    target = unmatched_target(targets, modules)
    if target is not None:
        raise no_match_error(where, target, matrix_leaves(modules))


@register_pass("lora")
class LoRA(Pass):
    type_name = "LoRA"
    REPORT_FILES = frozenset({"train_stats.json"})
    Params = LoRAParams
    accepts = ("hf",)
    output_kind = "adapter"
    uses_data = True

    # GPU and CPU numerics differ, and so do bf16 and fp32: the trained adapter depends on both.
    device_in_key = True

    # On the CPU with training_args.bf16 unset, fp32 is measured against bf16 before the key is made
    # (autotune.training.precision.probed_decision).
    probes_precision: ClassVar[bool] = True

    def device_key(self, params: PassParams, device: str, precision: str | None = None) -> dict[str, Any]:
        # CPU fp32 adds nothing, so the keys of caches filled before engine.device existed stay valid.
        assert isinstance(params, LoRAParams)
        precision = precision or mixed_precision(params.training_args, device)
        return {k: v for k, v in (("device", device), ("precision", precision)) if v not in ("cpu", "fp32")}

    def cache_context(self, params: PassParams, ctx: KeyContext) -> StepContext:
        """The device and the precision it trains in (the CPU probe's decision where it applies) enter the key; the
        decision and its timings reach the run (``ctx.precision``, ``ctx.precision_probe``)."""
        from autotune.training import precision_probe
        from autotune.training.precision import probe_fields, probed_decision

        probe = probed_decision(params, ctx, trainer_probe=precision_probe.trainer_probe) if self.probes_precision else None
        return StepContext(key=self.device_key(params, ctx.device, probe.precision if probe else None), run=probe_fields(probe))

    def check(self, params: LoRAParams, *, provider: str, origin: str) -> None:  # type: ignore[override]
        check_training_args(params.training_args, validation_size=params.validation_size, origin=origin)

    def check_model(self, params: LoRAParams, model: ModelFacts, *, origin: str,  # type: ignore[override]
                    key: Callable[[str], str]) -> None:
        """Each target against the model's module names (peft's rule, as :func:`check_targets` at training)."""
        target = unmatched_target(params.target_modules, model.modules.names)
        if target is not None:
            raise no_match_error(key("target_modules"), target, model.modules.matrices)

    def run(self, model: ModelHandle, params: LoRAParams, ctx: PassContext, output: Path) -> None:
        train_adapter(model, params, ctx, output)


def train_adapter(model: ModelHandle, params: LoRAParams, ctx: PassContext, output: Path,
                  quantization_config: Any = None) -> None:
    """Fine-tune a LoRA adapter on ``ctx.data`` and save it to ``output`` (shared with QLoRA)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainerCallback, set_seed

    # Seed before peft creates the adapter: its LoRA A matrices are drawn at get_peft_model, before
    # the Trainer seeds, so without this two runs of one config train different adapters.
    set_seed(params.training_args.seed)
    data = ctx.data
    assert data is not None, "the pipeline gives training passes their data"
    origin = ctx.origin
    device = ctx.device
    # The probe's choice (None: training_args or the device decide), as it entered the cache key.
    precision = ctx.precision or mixed_precision(params.training_args, device)
    began = time.perf_counter()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    tokenizer = load_tokenizer(model.path, trust_remote_code=ctx.trust_remote_code)
    # A 4-bit base is quantized where it is loaded, so on CUDA it is loaded onto the GPU (the Trainer
    # does not move quantized models); a full-precision base is moved by the Trainer.
    base = load_causal_lm(model.path, trust_remote_code=ctx.trust_remote_code, quantization_config=quantization_config,
                          device_map={"": 0} if quantization_config is not None and device == "cuda" else None)
    check_targets(base, params.target_modules, f"{origin}.target_modules")
    if quantization_config is not None:
        from peft import prepare_model_for_kbit_training

        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=params.training_args.gradient_checkpointing)
    lora_config = LoraConfig(
        r=params.r,
        lora_alpha=params.effective_alpha,
        lora_dropout=params.lora_dropout,
        target_modules=params.target_modules,
        task_type="CAUSAL_LM",
        bias="none",
    )
    try:
        peft_model = get_peft_model(base, lora_config)
    except ValueError as exc:
        raise ConfigError(f"{origin}.target_modules", str(exc).splitlines()[0][:200]) from None
    loss_on = params.loss_on or ("answer" if data.is_classification else "all")
    n_val = min(params.validation_size, max(0, len(data.train) // 5))
    train_rows = data.train[: len(data.train) - n_val] if n_val else data.train
    val_rows = data.train[len(data.train) - n_val:] if n_val else []
    train_features = tokenize_rows(tokenizer, data, train_rows, loss_on)
    val_features = tokenize_rows(tokenizer, data, val_rows, loss_on)
    collator = PadToLongest(tokenizer.pad_token_id)
    args = training_arguments(params.training_args, ctx.work_dir / "trainer", learning_rate=params.learning_rate, origin=origin,
                              device=device, precision=precision)
    evaluating = args.eval_strategy != "no"  # the user's eval_strategy: the Trainer evaluates the validation rows
    if evaluating and not val_features:
        raise ConfigError(f"{origin}.training_args.eval_strategy", f"needs validation rows, but {len(data.train)} training rows "
                          f"leave none (validation_size {params.validation_size})")
    history: list[dict[str, float]] = []

    def validation_loss() -> float:
        peft_model.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for i in range(0, len(val_features), args.per_device_eval_batch_size):
                batch = {k: v.to(peft_model.device) for k, v in collator(val_features[i: i + args.per_device_eval_batch_size]).items()}
                out = peft_model(**batch)
                n = int((batch["labels"][:, 1:] != -100).sum())
                total += float(out.loss) * n
                count += n
        peft_model.train()
        return total / max(count, 1)

    class Watch(TrainerCallback):
        def on_log(self, _args: Any, state: Any, _control: Any, logs: dict[str, float] | None = None, **_: Any) -> None:
            if logs and "eval_loss" in logs:  # the Trainer's own evaluation (eval_strategy)
                history.append({"step": state.global_step, "eval_loss": float(logs["eval_loss"])})
            if logs and "loss" in logs:
                history.append({"step": state.global_step, "loss": float(logs["loss"])})
                if not math.isfinite(float(logs["loss"])):
                    raise TrainingDiverged(f"training loss is {logs['loss']} at step {state.global_step}")

        def on_step_end(self, _args: Any, state: Any, _control: Any, **_: Any) -> None:
            ctx.check_deadline(f"at training step {state.global_step}")
            if ctx.progress is not None:
                ctx.progress(state.global_step, state.max_steps)
            every = params.report_every
            if ctx.report_intermediate and val_features and every and state.global_step % every == 0:
                loss = validation_loss()
                history.append({"step": state.global_step, "eval_loss": loss})
                ctx.report_intermediate(state.global_step, loss)

    trainer = Trainer(
        model=peft_model,
        args=args,
        train_dataset=train_features,
        eval_dataset=val_features if evaluating else None,
        data_collator=collator,
        callbacks=[Watch()],
    )
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)  # progress goes through ctx.progress, not print()
    trainer.remove_callback(ProgressCallback)
    result = trainer.train()
    if not math.isfinite(result.training_loss):
        raise TrainingDiverged(f"training loss is {result.training_loss}")
    peft_model.save_pretrained(str(output), safe_serialization=True)
    tokenizer.save_pretrained(str(output))
    summary = {
        "train_rows": len(train_features),
        "validation_rows": len(val_features),
        "loss_on": loss_on,
        "steps": result.global_step,
        "training_loss": result.training_loss,
        "history": history,
    }
    (output / "training_log.json").write_text(json.dumps(summary, indent=2))
    # Where and how fast it trained (not part of the adapter: timings differ from run to run).
    stats = {"device": device, "precision": precision, **ctx.precision_probe,
             "seconds": round(time.perf_counter() - began, 2),
             "train_seconds": round(float(result.metrics.get("train_runtime", 0.0)), 2), "steps": result.global_step,
             **record_peak_memory(device)}
    (output / "train_stats.json").write_text(json.dumps(stats, indent=2))
