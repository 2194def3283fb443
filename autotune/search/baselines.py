"""The study's baselines: the input model measured like the trials, once per base model.

A study whose models are ONNX is compared with the input model built as fp32 ONNX for its provider and
measured by the same evaluator; the input model in PyTorch eager stays an extra, labelled reference.
A study that searches the base model (a list ``input_model``) measures each candidate so: a trial's
paired comparison, its ratios and its relative goals are against its own base's baseline.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from autotune.evaluation.base import EvalModel
from autotune.plan import all_steps
from autotune.records import BaseModelInfo

if TYPE_CHECKING:
    from autotune.run_context import RunContext

__all__ = ["Baselines", "base_infos", "measure_baselines"]

log = logging.getLogger("autotune")


@dataclass
class Baselines:
    baseline: dict[str, Any] | None = None  # the default (first) base's, by metric id
    reference: dict[str, Any] | None = None  # the default base in PyTorch eager, a reference row only
    kind: str = "none"  # "onnx-fp32", "pytorch" or "none"
    per_base: dict[str, dict[str, Any]] = field(default_factory=dict)  # every candidate's, by base name


def measure_baselines(ctx: RunContext, evaluator: Any) -> Baselines:
    """Every baseline the study compares its trials with (nothing when there is no evaluator, or no
    baseline was asked for and no goal is relative to it)."""
    cfg = ctx.config
    if evaluator is None:
        return Baselines()
    relative = any(s.goal and s.goal.type != "threshold" for s in evaluator.specs)
    if not (cfg.engine.evaluate_input_model or relative):
        return Baselines()
    onnx = any(step.pass_cls.output_kind == "onnx" for step in all_steps(ctx.pipeline.slots))
    out = Baselines(kind="onnx-fp32" if onnx else "pytorch")
    for i, base in enumerate(cfg.base_names or [None]):
        baseline, reference = _one_base(ctx, evaluator, base, onnx=onnx, with_reference=i == 0)
        if i == 0:
            out.baseline, out.reference = baseline, reference
        if base is not None:
            out.per_base[base] = baseline
    return out


def _one_base(ctx: RunContext, evaluator: Any, base: str | None, *, onnx: bool,
              with_reference: bool) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(baseline, PyTorch reference or None) of one base model (None: the one input model)."""
    cfg = ctx.config
    named = f" '{base}'" if base is not None else ""
    source = ctx.pipeline.input_model(base)
    reference = None
    if with_reference and cfg.engine.evaluate_input_model and cfg.engine.pytorch_reference:
        log.info("evaluating the input model%s in PyTorch (reference)", named)
        reference = evaluator.evaluate(EvalModel(path=source.path, kind="hf", key=source.key))
    if not onnx:
        if reference is None:
            reference = evaluator.evaluate(EvalModel(path=source.path, kind="hf", key=source.key))
        return reference, None
    log.info("building and evaluating the baseline: the input model%s as fp32 ONNX on %s", named, cfg.engine.provider)
    built = ctx.pipeline.run_baseline_build(base).model
    return evaluator.evaluate(EvalModel(path=built.path, kind=built.kind, key=built.key)), reference


def base_infos(cfg: Any) -> list[BaseModelInfo]:
    """The candidate base models of a study that searches the base: name, path and Hugging Face id when known."""
    from autotune.models.source import known_model_id

    out = []
    for candidate in cfg.input_models:
        spec = candidate.model_dump(mode="json", exclude={"name"})
        out.append(BaseModelInfo(name=candidate.name, model_path=str(spec.get("model_path") or ""),
                                 gguf_file=spec.get("gguf_file"), model_id=known_model_id(spec)))
    return out
