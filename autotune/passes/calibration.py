"""Calibration inputs for the data-aware quantizers, and the per-MatMul input statistics they need.

Calibration text is the task's own *training* rows with the prompt template applied (prompt + answer,
tokenised by :func:`autotune.data.encode_example` exactly as LoRA trains on them). Held-out rows are
never read: they are what the evaluators score, and calibrating on them would leak the test set.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np

from autotune.data import Dataset, encode_example
from autotune.threads import ort_session_options

# ONNX TensorProto element type -> numpy dtype for the KV-cache inputs.
ONNX_DTYPES = {1: np.float32, 10: np.float16, 7: np.int64, 6: np.int32}


def calibration_rows(data: Dataset, count: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """``count`` training rows (all of them when fewer), in a fixed pseudo-random order."""
    rows = list(data.train)  # never data.eval: held-out rows stay unseen by every pass
    random.Random(seed).shuffle(rows)
    return rows[:count]


def calibration_feeds(folder: Path, model: Any, data: Dataset, count: int, *, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """One input dict per calibration row for a builder decoder graph (``model``: its ModelProto), batch 1, empty KV cache."""
    from autotune.models.loading import load_tokenizer

    tokenizer = load_tokenizer(folder)
    decoder = json.loads((folder / "genai_config.json").read_text())["model"]["decoder"]
    kv_heads, head_size = int(decoder["num_key_value_heads"]), int(decoder["head_size"])
    inputs = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
    feeds: list[dict[str, np.ndarray]] = []
    for row in calibration_rows(data, count, seed=seed):
        ids, _ = encode_example(tokenizer, data.template.prompt(row), data.template.answer(row), max_len=data.source_max_len)
        feeds.append(decoder_feed(inputs, ids, kv_heads, head_size))
    return feeds


def decoder_feed(inputs: dict[str, int], ids: list[int], kv_heads: int, head_size: int) -> dict[str, np.ndarray]:
    """The inputs of a builder decoder for one sequence ``ids`` and no past (``inputs``: name -> ONNX elem type)."""
    length = len(ids)
    feed: dict[str, np.ndarray] = {}
    for name, elem in inputs.items():
        dtype = ONNX_DTYPES.get(elem, np.float32)
        if name == "input_ids":
            feed[name] = np.asarray([ids], dtype=dtype)
        elif name == "attention_mask":
            feed[name] = np.ones((1, length), dtype=dtype)
        elif name == "position_ids":
            feed[name] = np.arange(length, dtype=dtype)[None, :]
        elif name.startswith("past_key_values."):
            feed[name] = np.zeros((1, kv_heads, 0, head_size), dtype=dtype)
        else:
            raise ValueError(f"the decoder graph has an input calibration cannot feed: {name}")
    return feed


def weight_matmuls(model: Any) -> dict[str, tuple[str, str]]:
    """node name -> (activation input, weight initializer) for every float MatMul with a 2-D constant weight."""
    shapes = {t.name: len(t.dims) for t in model.graph.initializer}
    return {n.name: (n.input[0], n.input[1]) for n in model.graph.node
            if n.op_type == "MatMul" and shapes.get(n.input[1]) == 2}


def input_moments(model: Any, feeds: list[dict[str, np.ndarray]], names: list[str], *, full: bool = False) -> dict[str, np.ndarray]:
    """Second moments of each tensor in ``names`` over every token of every feed, in one forward pass per feed:
    E[x x^T] ([K, K], GPTQ's Hessian up to a factor) when ``full``, else its diagonal E[x_k^2] ([K])."""
    import onnx
    import onnxruntime as ort

    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    present = {o.name for o in augmented.graph.output}
    for name in names:
        if name not in present:
            augmented.graph.output.append(onnx.ValueInfoProto(name=name))
    # run --jobs: this job's share of the cores (autotune.threads), not a pool of every core per job
    session = ort.InferenceSession(augmented.SerializeToString(), ort_session_options(), providers=["CPUExecutionProvider"])
    del augmented
    sums: dict[str, np.ndarray] = {}
    tokens = 0
    for feed in feeds:
        values = session.run(names, feed)
        for name, value in zip(names, values, strict=True):
            flat = value.reshape(-1, value.shape[-1]).astype(np.float64)
            sums[name] = sums.get(name, 0) + (flat.T @ flat if full else (flat ** 2).sum(axis=0))
        tokens += values[0].reshape(-1, values[0].shape[-1]).shape[0]
    return {name: total / max(tokens, 1) for name, total in sums.items()}
