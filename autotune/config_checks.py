"""The config's cross-checks, above the pure-data ``config/`` package: each pass's parameters against
its pass, each metric against its metric type and data, the LoRA targets and the dropped depth against
the input model's files. ``load_config`` here is the config as a run sees it: parsed, then checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autotune.builder.support import check_architecture_before_running
from autotune.config.errors import join_path
from autotune.config.loader import parse_config, read_source
from autotune.config.schema import RunConfig
from autotune.data import resolve_data_name, template_of
from autotune.errors import ConfigError, ModelError, UserError
from autotune.evaluation import get_metric_type
from autotune.evaluation.runner import metric_specs
from autotune.models.module_names import model_file
from autotune.models.source import InputSource, locate_input_model, names_a_hub_model
from autotune.passes import get_pass
from autotune.passes.base import ModelFacts, Pass
from autotune.plan import Step, all_steps, build_plan, check_passes, probe_points

__all__ = ["check_candidate_tokenizer", "check_candidates", "check_chat_templates_before_running", "check_config",
           "check_metric_inputs", "check_metrics", "check_model_before_running",
           "check_passes_before_running", "load_config", "validate_models"]


def load_config(source: str | Path | dict[str, Any], *, base_dir: Path | None = None) -> RunConfig:
    """Load and validate a run config from a file path or an already-parsed mapping."""
    raw, base = read_source(source, base_dir=base_dir)
    config, evaluator_origins = parse_config(raw, base, pass_aliases=pass_aliases)
    check_config(config, evaluator_origins)
    return config


def pass_aliases(type_name: str, where: str) -> dict[str, str]:
    """The other names a pass type's parameters may be written under (alias -> canonical)."""
    return get_pass(type_name, path=where).Params.ALIASES


def check_config(config: RunConfig, evaluator_origins: dict[str, str]) -> None:
    """Every cross-check a parsed config gets before anything runs, in the order the user sees errors."""
    check_passes(config)
    check_metrics(config, evaluator_origins)
    if config.base_names:
        check_candidates(config)
    else:
        check_model_before_running(config)


def check_candidates(config: RunConfig) -> None:
    """Each candidate base model of a list ``input_model`` on this machine, checked as the run's one
    input model would be (files, LoRA targets, depth) and its tokenizer against the data configs; a Hub
    id not resolved yet waits for the caller that resolves it (:func:`validate_models`, the preflight).
    A refusal is one line naming the candidate (``input_model[i]: candidate 'name': ...``)."""
    from autotune.data import load_data
    from autotune.models.source import candidate_error, check_input_model

    datasets = None
    for base in config.base_names:
        one = config.for_base(base)
        if names_a_hub_model(one.input_model):
            continue
        if datasets is None:  # read (not cached: validate writes nothing) once, for every candidate
            datasets = [load_data(d, where=f"data_configs[{i}]") for i, d in enumerate(config.data_configs)]
        try:
            source = check_input_model(one, download=False)
            check_model_before_running(one, source)
            check_candidate_tokenizer(one, source, datasets)
        except UserError as exc:
            raise candidate_error(config, base, exc) from None


def check_data_configs(config: RunConfig) -> None:
    """Every data config read, templated and split as the run would (the rows not cached: nothing is
    written), whatever the input model's source: a Hub id or a GGUF gets the same data checks as a folder."""
    from autotune.data import load_data

    for i, data_config in enumerate(config.data_configs):
        load_data(data_config, where=f"data_configs[{i}]")


def validate_models(config: RunConfig) -> None:
    """``autotune validate``'s look at Hugging Face ids (in the cache, or asked of the Hub; nothing
    downloaded): the input model's, or every candidate's, with the checks that needed its files."""
    from autotune.models.source import candidate_error, check_input_model

    for base in config.base_names or [None]:
        one = config.for_base(base)
        if not names_a_hub_model(one.input_model):
            continue
        try:
            source = check_input_model(one, download=False)
            check_model_before_running(one, source)
        except UserError as exc:
            if base is None:
                raise
            raise candidate_error(config, base, exc) from None


def check_candidate_tokenizer(config: RunConfig, source: InputSource, datasets: list[Any]) -> None:
    """A candidate's tokenizer against every data config it would serve: it loads; the prompt template
    gives tokens; each label gives tokens, and no two labels the same ones (label scoring compares the
    labels' log-likelihoods, the fine-tune learns them as answers). What a base model compared with
    others must do for the study's task; the single input model's own checks are the run's."""

    tokenizer = _tokenizer(config, source)
    if tokenizer is None:
        return  # not on this machine yet (a Hub id validate did not download, the demo before its fetch)
    for i, data in enumerate(datasets):
        where = f"data_configs[{i}]"  # a chat template was checked against this tokenizer before (check_model_before_running)
        rows = data.train or data.eval
        if rows and not tokenizer(data.template.prompt(rows[0], tokenizer), add_special_tokens=False)["input_ids"]:
            raise ModelError("input_model", f"its tokenizer gives no tokens for {where}'s prompt template")
        seen: dict[tuple[int, ...], str] = {}
        for label in data.labels or []:
            ids = tuple(tokenizer(label, add_special_tokens=False)["input_ids"])
            if not ids:
                raise ModelError("input_model", f"its tokenizer gives no tokens for label '{label}' of {where}")
            if ids in seen:
                raise ModelError("input_model", f"its tokenizer gives labels '{seen[ids]}' and '{label}' of {where} the same "
                                                f"tokens {list(ids)}: label scoring could not tell them apart")
            seen[ids] = label


def _tokenizer(config: RunConfig, source: InputSource) -> Any:
    """The input model's tokenizer from its files (a folder's or a GGUF's), None when they are not here yet."""
    from autotune.models.loading import load_tokenizer

    path = source.folder if source.gguf is None else source.gguf
    if path is None or not path.exists():
        return None
    try:
        if source.gguf is not None:
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(str(source.gguf.parent), gguf_file=source.gguf.name,
                                                 trust_remote_code=config.input_model.trust_remote_code)
        return load_tokenizer(path, trust_remote_code=config.input_model.trust_remote_code)
    except Exception as exc:  # any library failure to load it is the reason the model is refused
        first = (str(exc).splitlines() or [""])[0][:200]
        raise ModelError("input_model", f"its tokenizer does not load from {path} ({type(exc).__name__}: {first})") from None


def check_chat_templates_before_running(config: RunConfig, source: InputSource | None = None) -> None:
    """Each ``chat_template: true`` data config against the input model's tokenizer (it has a chat template
    that renders a user and an assistant turn); ``source`` as for :func:`check_passes_before_running`."""
    from autotune.data import template_of

    chats = [(i, d) for i, d in enumerate(config.data_configs) if d.chat_template]
    if not chats:
        return
    if source is None:
        if names_a_hub_model(config.input_model):
            return
        source = locate_input_model(config.input_model, download=False)
    tokenizer = _tokenizer(config, source)
    if tokenizer is None:
        return
    for i, data_config in chats:
        template_of(data_config, where=f"data_configs[{i}]").check_tokenizer(tokenizer, where=f"data_configs[{i}]")


def check_model_before_running(config: RunConfig, source: InputSource | None = None) -> None:
    """The LoRA targets, the dropped depth and the chat templates against the input model's files (see each check)."""
    check_architecture_before_running(config, all_steps(build_plan(config)), source)  # the ONNX builder exports it
    check_passes_before_running(config, source)
    check_chat_templates_before_running(config, source)


def check_metrics(config: RunConfig, origins: dict[str, str]) -> None:
    """Every metric's type, sub-types, user_config and data config, checked before anything runs.

    ``origins`` maps an evaluator name to where it was written: ``evaluators.<name>`` in the
    config, or ``<file>:`` for ``evaluators/<name>.yaml``.
    """
    for name, evaluator in config.evaluators.items():
        origin = origins.get(name, join_path("evaluators", name))
        prefix = "@"  # metric_specs joins its paths under this; replaced by the evaluator's origin below
        try:
            metric_specs(evaluator, where=prefix)
            for i, metric in enumerate(evaluator.metrics):
                metric_type = get_metric_type(metric.type, where="")
                if metric.data_config is not None or metric_type.needs_data:
                    name = resolve_data_name(config, metric.data_config, where=f"{prefix}.metrics[{i}].data_config",
                                             missing="name the data config this metric reads")
                    j, data_config = next((j, d) for j, d in enumerate(config.data_configs) if d.name == name)
                    metric_type.check_template(template_of(data_config, where=f"data_configs[{j}]"), where=f"{prefix}.metrics[{i}].type")
        except ConfigError as exc:
            if not exc.where.startswith(prefix):
                raise
            rest = exc.where[len(prefix) + 1:]
            if not rest:
                where = origin.removesuffix(":")
            elif origin.endswith(":"):
                where = f"{origin} {rest}"
            else:
                where = join_path(origin, rest)
            raise ConfigError(where, exc.message) from None


def check_metric_inputs(config: RunConfig, *, only: str | None = None) -> None:
    """What each metric reads outside the config (an lm_eval metric's tasks and their data), checked by its
    type's ``check_inputs`` before anything runs; ``only``: just that evaluator's metrics (the run's)."""
    from autotune.config.errors import validate_model

    for name, evaluator in config.evaluators.items():
        if only is not None and name != only:
            continue
        for i, metric in enumerate(evaluator.metrics):
            where = f"evaluators.{name}.metrics[{i}]"
            metric_type = get_metric_type(metric.type, where=f"{where}.type")
            params = validate_model(metric_type.Params, metric.user_config, f"{where}.user_config")
            metric_type.check_inputs(params, where=where, base_dir=config.config_dir, sub_types=list(metric.sub_types))


def check_passes_before_running(config: RunConfig, source: InputSource | None = None) -> None:
    """Each pass's own :meth:`~autotune.passes.base.Pass.check_model` (LoRA targets, the depth a pruning pass drops, ...) for every
    value a study may try, against the input model's files read without loading its weights: the same rules as at
    training, so ``validate`` and the run agree. ``source``: where the input model's files were found
    (:func:`autotune.models.source.check_input_model`); without it, a local model is checked and a Hub id or the
    demo waits for the caller that resolves it (``validate``, the run's preflight). A model not on this machine yet
    (the demo before its fetch) is checked when trained."""
    steps = [s for s in all_steps(build_plan(config)) if s.pass_cls.check_model is not Pass.check_model]
    path = _local_model_file(config, source) if steps else None
    if path is None:
        return
    facts = ModelFacts(path, trust_remote_code=config.input_model.trust_remote_code)
    for step in steps:
        def key(name: str, step: Step = step) -> str:
            return f"{step.origin}.{step.user_keys.get(name, name)}"

        checked = step.pass_cls()
        for point in probe_points(step):
            checked.check_model(step.params(point), facts, origin=step.origin, key=key)


def _local_model_file(config: RunConfig, source: InputSource | None) -> Path | None:
    """The input model's folder or GGUF file when it is on this machine now; None for a Hub id not yet
    resolved by the caller (``source`` None) or a model not fetched yet: their checks wait for the caller."""
    if source is None and names_a_hub_model(config.input_model):
        return None
    return model_file(source if source is not None else locate_input_model(config.input_model, download=False))
