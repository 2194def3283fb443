"""Which models onnxruntime-genai's model builder exports, and the input model's config as it expects it.

:func:`builder_architectures` reads the installed builder's own dispatch (``builder.py``'s
``config.architectures[0] == "..."`` branches) without importing it (no torch), so the list follows the
installed onnxruntime-genai; :func:`check_architecture_before_running` refuses, at ``validate``, an input
model whose architecture is not in it when the plan builds ONNX (the builder would stop with "The ... model
is not currently supported" only after the fine-tune). :func:`adapt_builder_config` fills the fields the
builder reads where transformers 5 writes them otherwise (called by the build, between the builder's
``parse_extra_options`` and ``create_model``).
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune.errors import ModelError

if TYPE_CHECKING:
    from autotune.config.schema import RunConfig
    from autotune.models.source import InputSource

__all__ = ["adapt_builder_config", "builder_architectures", "builder_version", "check_architecture_before_running"]

GENAI_DISTRIBUTIONS = ("onnxruntime-genai", "onnxruntime-genai-cuda", "onnxruntime-genai-directml")


def _builder_source() -> Path | None:
    """onnxruntime_genai/models/builder.py of the installed package, found without importing it."""
    spec = importlib.util.find_spec("onnxruntime_genai")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / "models" / "builder.py"
        if path.is_file():
            return path
    return None


@functools.lru_cache(maxsize=1)
def builder_architectures() -> frozenset[str]:
    """Every ``architectures[0]`` the installed model builder dispatches on (empty when it is not installed)."""
    path = _builder_source()
    if path is None:
        return frozenset()
    return architectures_in(path.read_text(encoding="utf-8"))


def architectures_in(source: str) -> frozenset[str]:
    """The string constants ``config.architectures[0]`` is compared with (``==``) in ``source``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare) or not _is_architecture(node.left):
            continue
        for op, right in zip(node.ops, node.comparators, strict=True):
            if isinstance(op, ast.Eq) and isinstance(right, ast.Constant) and isinstance(right.value, str):
                names.add(right.value)
    return frozenset(names)


def _is_architecture(node: ast.expr) -> bool:
    """``<x>.architectures[0]``."""
    return (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) and node.value.attr == "architectures"
            and isinstance(node.slice, ast.Constant) and node.slice.value == 0)


def builder_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    for name in GENAI_DISTRIBUTIONS:
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return "?"


def check_architecture_before_running(config: RunConfig, steps: Iterable[Any], source: InputSource | None = None) -> None:
    """When one of the plan's ``steps`` builds ONNX (a pass with an ONNX output: the baseline is built too),
    the input model's architecture (config.json's ``architectures[0]``; a GGUF's, as transformers converts
    it) must be one the installed model builder exports. ``source`` as for
    :func:`autotune.config_checks.check_targets_before_running`: a model not on this machine yet is checked by
    the caller that resolves it (``validate``, the run's preflight), or at its build."""
    from autotune.models.module_names import architecture, model_file
    from autotune.models.source import locate_input_model, names_a_hub_model

    if not any(step.pass_cls.output_kind == "onnx" for step in steps):
        return
    supported = builder_architectures()
    if not supported:
        return  # no builder installed: the build's own import error says so
    if source is None and names_a_hub_model(config.input_model):
        return
    path = model_file(source if source is not None else locate_input_model(config.input_model, download=False))
    if path is None:
        return
    name = architecture(path, trust_remote_code=config.input_model.trust_remote_code)
    if name not in supported:
        raise ModelError("input_model", f"its architecture {name} is not one the model builder of onnxruntime-genai "
                                        f"{builder_version()} exports to ONNX, and every ONNX build of this config needs it; "
                                        f"it exports {', '.join(sorted(supported))}")


def adapt_builder_config(config: Any) -> None:
    """The input model's config (as the builder read it) in the form the builder expects, where it reads a
    field transformers 5 writes otherwise; the model's weights and its own config.json are untouched.

    - Per-layer-type RoPE (Gemma 3: ``rope_parameters = {"full_attention": {...}, "sliding_attention": {...}}``):
      the builder reads a flat ``rope_parameters`` and ``rope_local_base_freq`` (the sliding layers' theta),
      the fields transformers 4 wrote; without them it stops on ``KeyError: 'rope_type'``.
    - A sliding window without ``layer_types`` (Mistral): transformers applies the window on every layer,
      while the builder takes a missing ``layer_types`` as all full attention yet still writes the window into
      genai_config.json, so onnxruntime-genai sizes every KV cache to the window and a longer sequence fails
      ("total_sequence_length must equal past_sequence_length + kv_sequence_length ..."); every layer is
      marked sliding, as transformers runs it.
    """
    rope = getattr(config, "rope_parameters", None)
    if isinstance(rope, dict) and "rope_type" not in rope and isinstance(rope.get("full_attention"), dict):
        local = rope.get("sliding_attention") or rope["full_attention"]
        if getattr(config, "rope_local_base_freq", None) is None and "rope_theta" in local:
            config.rope_local_base_freq = local["rope_theta"]
        config.rope_parameters = dict(rope["full_attention"])
    window = getattr(config, "sliding_window", None)
    if isinstance(window, int) and window > 0 and getattr(config, "layer_types", None) is None \
            and getattr(config, "use_sliding_window", True):
        config.layer_types = ["sliding_attention"] * int(config.num_hidden_layers)
