"""Depth pruning: drop the decoder blocks that change their input least, and write a smaller HF folder.

How much a block changes its input is measured on calibration rows of the *training* split (templated and
tokenised exactly as LoRA trains on them; held-out rows are never read), by one of two rules:

* ``angular_run`` (default; Gromov et al. 2024, "The Unreasonable Ineffectiveness of the Deeper Layers"):
  drop the contiguous run of ``n_drop`` blocks starting at the layer ``l`` that minimises the angular
  distance ``arccos(cos(h_l, h_{l+n})) / pi`` between the residual stream before and after the run, at
  each row's last token, averaged over the rows. It scores the run as a whole: removing n adjacent blocks
  whose changes compound is judged by what the run does together, not by adding up per-block scores.
* ``block_influence`` (ShortGPT, Men et al. 2024): each block's ``1 - cos(h_in, h_out)`` averaged over
  every token; the ``n_drop`` blocks with the lowest scores go, wherever they are.

The pass sits before LoRA so the fine-tune heals what was removed. The output is a Hugging Face folder the
builder exports as is: ``config.num_hidden_layers`` and per-layer config lists (``layer_types``) cut, the
kept blocks renumbered 0..n-1 in the safetensors, the tokenizer and other files copied, and
``drop_layers.json`` naming the blocks that went and every score.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from autotune.context import PassContext
from autotune.data import encode_row
from autotune.errors import ConfigError
from autotune.fileio import link_or_copy
from autotune.models.handle import ModelHandle
from autotune.passes.base import ModelFacts, Pass, PassParams, PassView, register_pass, searchable

__all__ = ["DEPTH_ARCHITECTURES", "BlockStates", "DropLayers", "DropLayersParams", "choose_blocks",
           "write_pruned_folder"]

# The model builder's decoder-only architectures whose blocks are ``model.layers.<i>`` with one residual
# stream in and out (what dropping a block and renumbering the rest relies on).
DEPTH_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")
STATS_FILE = "drop_layers.json"
LAYER_KEY = re.compile(r"^model\.layers\.(\d+)\.")
# Parameters that matter only when blocks are dropped: with n_drop 0 they stay out of the cache key.
PRUNING_FIELDS = ("method", "calibration_rows", "calibration_seed", "train_data_config")


class DropLayersParams(PassParams):
    n_drop: int = searchable(0, space=[0, 6, 12], ge=0)
    method: Literal["angular_run", "block_influence"] = searchable("angular_run", space=["angular_run", "block_influence"])
    calibration_rows: int = Field(64, ge=1, le=4096)
    calibration_seed: int = 0
    train_data_config: str | None = None

    def applies(self, name: str) -> bool:
        if name in PRUNING_FIELDS:
            return self.n_drop > 0
        return super().applies(name)


@register_pass("drop_layers", "DepthPruning")
class DropLayers(Pass):
    type_name = "DropLayers"
    Params = DropLayersParams
    accepts = ("hf",)
    output_kind = "hf"
    uses_data = True
    REPORT_FILES = frozenset({STATS_FILE})

    @classmethod
    def summary(cls, model_dir: Path) -> dict[str, Any] | None:
        """Which blocks went, of how many, by which method (its drop_layers.json, less the scores and timings)."""
        try:
            stats = json.loads((model_dir / STATS_FILE).read_text())
        except (OSError, ValueError):
            return None
        return {k: stats[k] for k in ("n_drop", "method", "num_hidden_layers", "kept_layers", "dropped") if k in stats}

    @classmethod
    def view(cls, params: dict[str, Any], summary: dict[str, Any] | None) -> PassView:
        """The trials table's ``dropped_layers`` (the blocks' indices in the input model, or "none"); the plots'
        colour by blocks dropped."""
        columns = {"dropped_layers": ",".join(str(i) for i in summary.get("dropped") or []) or "none"} if summary else {}
        return PassView(columns=columns, depth=int(params["n_drop"]) if "n_drop" in params else None)

    def reads_data(self, params: DropLayersParams) -> bool:  # type: ignore[override]
        return params.n_drop > 0  # n_drop 0 is the identity: no calibration, no data in its key

    def check_model(self, params: DropLayersParams, model: ModelFacts, *, origin: str,  # type: ignore[override]
                    key: Callable[[str], str]) -> None:
        """The architecture and depth each searched ``n_drop`` needs, from the model's config."""
        try:
            check_depth_config(model.config, params.n_drop, origin)
        except ConfigError as exc:
            if exc.where.endswith(".type"):  # the pass's own key, as the user wrote the pass
                raise ConfigError(f"{origin.removesuffix('.config')}.type", exc.message) from None
            raise ConfigError(key("n_drop"), exc.message) from None

    def run(self, model: ModelHandle, params: DropLayersParams, ctx: PassContext, output: Path) -> None:  # type: ignore[override]
        origin = ctx.origin
        config = json.loads((model.path / "config.json").read_text())
        check_depth_config(config, params.n_drop, origin)
        if params.n_drop == 0:
            link_folder(model.path, output)
            record = {"n_drop": 0, "num_hidden_layers": config["num_hidden_layers"], "dropped": [], "kept_layers":
                      config["num_hidden_layers"]}
            (output / STATS_FILE).write_text(json.dumps(record, indent=2))
            return
        assert ctx.data is not None, "the pipeline gives a pass that reads data its data"
        began = time.perf_counter()
        states = block_states(model.path, ctx, params)
        dropped, scores = choose_blocks(states, params.n_drop, params.method)
        write_pruned_folder(model.path, output, dropped)
        record = {
            "n_drop": params.n_drop, "method": params.method, "num_hidden_layers": config["num_hidden_layers"],
            "kept_layers": config["num_hidden_layers"] - len(dropped), "dropped": dropped,
            # angular_run: start layer -> distance of the run starting there; block_influence: block -> score
            "scores": {str(k): round(v, 6) for k, v in scores.items()},
            "calibration_rows": len(states), "seconds": round(time.perf_counter() - began, 2),
        }
        (output / STATS_FILE).write_text(json.dumps(record, indent=2))


def check_depth_config(config: dict[str, Any], n_drop: int, where: str) -> None:
    """Refuse a model whose blocks this pass cannot drop, or ``n_drop`` that leaves no block."""
    architectures = config.get("architectures") or []
    name = architectures[0] if architectures else config.get("model_type", "unknown")
    if name not in DEPTH_ARCHITECTURES:
        raise ConfigError(f"{where}.type", f"DropLayers prunes {', '.join(DEPTH_ARCHITECTURES)} models; the input model is {name}")
    layers = int(config.get("num_hidden_layers", 0))
    if n_drop >= layers:
        raise ConfigError(f"{where}.n_drop", f"{n_drop} would leave no decoder block: the input model has {layers}")


def link_folder(source: Path, output: Path) -> None:
    """The input's files in ``output``, weights hard-linked where the file system allows (no copy of their bytes)."""
    for file in sorted(source.rglob("*")):
        if not file.is_file():
            continue
        target = output / file.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        link_or_copy(str(file.resolve()), str(target))  # resolved: a Hub cache's files are links into its blob store


@dataclass
class BlockStates:
    """What the block choice needs of one calibration row (not every hidden state: 64 rows of SmolLM2's 31
    streams x 128 tokens would hold ~0.6 GB)."""

    last_tokens: Any  # [L+1, H]: the residual stream at the last token, before block 0 and after each block
    influence: Any  # [L]: each block's 1 - cos(input, output), averaged over the row's tokens


def block_states(folder: Path, ctx: PassContext, params: DropLayersParams) -> list[BlockStates]:
    """One :class:`BlockStates` per calibration row (training split, templated as LoRA trains)."""
    import torch

    from autotune.models.loading import load_causal_lm, load_tokenizer
    from autotune.quant.calibration import calibration_rows

    data = ctx.data
    assert data is not None
    tokenizer = load_tokenizer(folder, trust_remote_code=ctx.trust_remote_code)
    model = load_causal_lm(folder, trust_remote_code=ctx.trust_remote_code)
    model.eval()
    blocks = model.model.layers
    captured: list[Any] = []

    def before_first(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        captured.append((args[0] if args else kwargs["hidden_states"])[0].detach().float())

    def after(_module: Any, _args: Any, out: Any) -> None:
        captured.append((out[0] if isinstance(out, tuple) else out)[0].detach().float())

    hooks = [blocks[0].register_forward_pre_hook(before_first, with_kwargs=True)]
    hooks += [block.register_forward_hook(after) for block in blocks]
    rows: list[BlockStates] = []
    try:
        with torch.no_grad():
            for row in calibration_rows(data, params.calibration_rows, seed=params.calibration_seed):
                ctx.check_deadline("while scoring blocks for DropLayers")
                ids, _ = encode_row(tokenizer, data.template, row, max_len=data.source_max_len)
                captured.clear()
                model(input_ids=torch.tensor([ids]), use_cache=False)
                influence = [(1 - torch.nn.functional.cosine_similarity(captured[i], captured[i + 1], dim=-1)).mean()
                             for i in range(len(captured) - 1)]
                rows.append(BlockStates(torch.stack([state[-1] for state in captured]), torch.stack(influence)))
    finally:
        for hook in hooks:
            hook.remove()
    return rows


def angular_distance(a: Any, b: Any) -> Any:
    """arccos of the cosine similarity over the last dimension, divided by pi (0: same direction, 1: opposite)."""
    import torch

    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1).clamp(-1.0, 1.0)
    return torch.arccos(cos) / math.pi


def choose_blocks(rows: list[BlockStates], n_drop: int, method: str) -> tuple[list[int], dict[int, float]]:
    """The blocks to drop (sorted) and the scores they were chosen by, averaged over the calibration rows."""
    layers = len(rows[0].influence)
    if method == "angular_run":
        # Gromov et al.: the distance at the last token between the stream before block l and after block l+n-1.
        scores = {start: sum(float(angular_distance(r.last_tokens[start], r.last_tokens[start + n_drop])) for r in rows) / len(rows)
                  for start in range(layers - n_drop + 1)}
        best = min(scores, key=lambda start: (scores[start], start))
        return list(range(best, best + n_drop)), scores
    # ShortGPT's Block Influence: 1 - cosine(input, output) of each block, averaged over every token.
    scores = {block: sum(float(r.influence[block]) for r in rows) / len(rows) for block in range(layers)}
    ranked = sorted(scores, key=lambda block: (scores[block], block))
    return sorted(ranked[:n_drop]), scores


def write_pruned_folder(source: Path, output: Path, dropped: list[int]) -> None:
    """``source`` without the blocks ``dropped``: kept blocks renumbered in the safetensors, the config cut to match."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    config = json.loads((source / "config.json").read_text())
    layers = int(config["num_hidden_layers"])
    gone = set(dropped)
    kept = [i for i in range(layers) if i not in gone]
    renumber = {old: new for new, old in enumerate(kept)}
    weight_files = sorted(source.glob("*.safetensors"))
    weight_map: dict[str, str] = {}
    for file in weight_files:
        tensors: dict[str, Any] = {}
        with safe_open(str(file.resolve()), framework="pt") as handle:
            metadata = handle.metadata() or {}
            for name in handle.keys():  # noqa: SIM118  (safe_open is not a mapping)
                match = LAYER_KEY.match(name)
                if match is None:
                    tensors[name] = handle.get_tensor(name)
                    continue
                old = int(match.group(1))
                if old in gone:
                    continue
                tensors[f"model.layers.{renumber[old]}.{name[match.end():]}"] = handle.get_tensor(name)
        save_file(tensors, str(output / file.name), metadata={"format": "pt", **metadata})
        weight_map.update({name: file.name for name in tensors})
    index = source / "model.safetensors.index.json"
    if index.is_file():
        meta = json.loads(index.read_text()).get("metadata", {})
        (output / index.name).write_text(json.dumps({"metadata": meta, "weight_map": dict(sorted(weight_map.items()))}, indent=2))
    config["num_hidden_layers"] = len(kept)
    for key, value in list(config.items()):
        # per-layer lists (layer_types: sliding or full attention per block) keep the kept blocks' entries
        if isinstance(value, list) and len(value) == layers and "layer" in key:
            config[key] = [value[i] for i in kept]
    (output / "config.json").write_text(json.dumps(config, indent=2))
    written = {f.name for f in weight_files} | {"config.json", index.name}
    for file in sorted(source.iterdir()):
        if file.is_file() and file.name not in written and not file.name.endswith((".bin", ".pt", ".pth", ".ckpt")):
            shutil.copy2(file.resolve(), output / file.name)
