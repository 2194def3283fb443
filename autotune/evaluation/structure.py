"""The structure key of a built model: what its speed and memory depend on, without its weights' values.

Decode time and peak memory of a dense ONNX model on one execution provider depend on the graph (operators,
their attributes, the initializers' shapes and types, how the weights are laid out on disk), the
onnxruntime-genai config (search settings, context length, KV cache layout) and the session's options (the
provider, the threads), not on what the weights are. Two fine-tunes built alike therefore share one latency
and memory measurement (:class:`autotune.evaluation.runner.ModelEvaluator` keys those metric types by this
key, in the evaluation cache and the artifact store), and a study cannot be misled by two noisy readings of
one kernel. Accuracy is never shared: its key stays the model's.

Hashed: every node's op type, domain, inputs, outputs and attributes (a tensor attribute by its type and
shape, and its values when it holds at most :data:`SMALL_TENSOR` elements: shapes and axes, not weights);
the graph's inputs and outputs with their types; each initializer's name, type, shape and external-data
location (file, offset, length); the opset imports; every other file of the folder by name and size, except
the genai config, which is hashed as written. Not hashed: initializer values.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from autotune.evaluation.footprint import pass_reports

__all__ = ["SMALL_TENSOR", "STRUCTURE_VERSION", "structure_key"]

# Bump when what is hashed changes: every structure key (and the measurements keyed by it) changes with it.
STRUCTURE_VERSION = 1
SMALL_TENSOR = 64


def structure_key(folder: Path, *, provider: str, session: dict[str, Any] | None = None) -> str | None:
    """The structure key of an ONNX folder on ``provider`` with ``session`` options; None for any other folder
    (an HF folder in PyTorch keeps per-model measurements)."""
    config = folder / "genai_config.json"
    if not config.is_file():
        return None
    stat = config.stat()
    return _folder_key(str(folder.resolve()), stat.st_mtime_ns, provider, json.dumps(session or {}, sort_keys=True))


@lru_cache(maxsize=256)
def _folder_key(folder: str, _mtime: int, provider: str, session: str) -> str:
    import onnx

    path = Path(folder)
    genai = json.loads((path / "genai_config.json").read_text())
    digest = hashlib.sha256()
    _update(digest, {"version": STRUCTURE_VERSION, "provider": provider, "session": session, "genai": genai})
    graph_files = sorted({genai.get("model", {}).get("decoder", {}).get("filename", "model.onnx")})
    for name in graph_files:
        model = onnx.load(str(path / name), load_external_data=False)
        _update(digest, {"file": name, "opsets": [(o.domain, o.version) for o in model.opset_import]})
        _graph(digest, model.graph)
        del model
    reports = pass_reports()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        relative = str(file.relative_to(path))
        # what passes write beside a model (its size varies with timings), and what is hashed above
        if relative in graph_files or file.name in reports or relative == "genai_config.json":
            continue
        _update(digest, {"other": relative, "bytes": os.path.getsize(file)})
    return digest.hexdigest()


def _graph(digest: Any, graph: Any) -> None:
    from onnx import helper

    for value in (*graph.input, *graph.output):
        _update(digest, {"io": value.name, "type": str(value.type)})
    for tensor in graph.initializer:
        external = {e.key: e.value for e in tensor.external_data}
        _update(digest, {"init": tensor.name, "dtype": tensor.data_type, "dims": list(tensor.dims), "external": external,
                         "bytes": len(tensor.raw_data)})
    for node in graph.node:
        attributes = []
        for attribute in node.attribute:
            if attribute.type == attribute.TENSOR:
                t = attribute.t
                small = _count(t.dims) <= SMALL_TENSOR
                attributes.append((attribute.name, t.data_type, list(t.dims), t.raw_data.hex() if small else None,
                                   list(t.int64_data) + list(t.int32_data) + list(t.float_data) if small else None))
            elif attribute.type == attribute.GRAPH:
                _graph(digest, attribute.g)
                attributes.append((attribute.name, "graph"))
            else:
                attributes.append((attribute.name, str(helper.get_attribute_value(attribute))))
        _update(digest, {"op": node.op_type, "domain": node.domain, "in": list(node.input), "out": list(node.output),
                         "attrs": attributes})


def _count(dims: Any) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n


def _update(digest: Any, item: Any) -> None:
    digest.update(json.dumps(item, sort_keys=True, default=str).encode())
    digest.update(b"\n")
