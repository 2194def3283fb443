"""Calibration inputs for the data-aware quantizers, and the per-MatMul input statistics they need.

Calibration text is the task's own *training* rows with the prompt template applied (prompt + answer,
tokenised by :func:`autotune.data.encode_row` exactly as LoRA trains on them). Held-out rows are
never read: they are what the evaluators score, and calibrating on them would leak the test set.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from autotune.data import Dataset, encode_row
from autotune.models.kv_cache import window_rows
from autotune.threads import ort_session_options, session_threads, usable_cpus

# Activations of this many tokens are stacked before they are folded into the Hessians: one BLAS product of
# a taller matrix per chunk instead of one small product per calibration row. The chunk of every MatMul
# input is held at once (SmolLM2-135M: ~50 MB at 128 tokens).
CHUNK_TOKENS = 128
# ONNX TensorProto element type -> numpy dtype for the KV-cache inputs.
ONNX_DTYPES = {1: np.float32, 10: np.float16, 7: np.int64, 6: np.int32}


def free_cores() -> int:
    """This process's cores (its ``run --jobs`` share, :mod:`autotune.threads`), at least 1: GPTQ's kernels use
    this many threads. Never the load average: the thread count decides how BLAS and ONNX Runtime split their
    sums, and the same config must give the same weights however busy the machine was at that moment (a
    load-dependent count made two identical runs of the suite disagree)."""
    return max(1, session_threads() or usable_cpus())


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
    windows = window_rows(model.graph.node, decoder)
    feeds: list[dict[str, np.ndarray]] = []
    for row in calibration_rows(data, count, seed=seed):
        ids, _ = encode_row(tokenizer, data.template, row, max_len=data.source_max_len)
        feeds.append(decoder_feed(inputs, ids, kv_heads, head_size, windows=windows))
    return feeds


def decoder_feed(inputs: dict[str, int], ids: list[int], kv_heads: int, head_size: int, *,
                 windows: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """The inputs of a builder decoder for one sequence ``ids`` and no past (``inputs``: name -> ONNX elem type).
    ``windows``: the past inputs of sliding-window layers and their buffer's rows (:func:`autotune.models.kv_cache.window_rows`),
    an empty cache of that capacity; every other past input is empty (0 rows)."""
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
            feed[name] = np.zeros((1, kv_heads, (windows or {}).get(name, 0), head_size), dtype=dtype)
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


def input_hessians(model_file: Path, feeds: list[dict[str, np.ndarray]], names: list[str], *,
                   timings: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """E[x x^T] ([K, K], float32; GPTQ's Hessian up to a factor) of each tensor in ``names`` over every token of
    every feed, streamed: one forward pass per feed, each chunk of ~``CHUNK_TOKENS`` tokens folded into running
    sums (a symmetric rank-k BLAS update, half a matrix product's work) and dropped, so activations are never
    kept. The forward passes run only the nodes ``names`` depend on (not the LM head, when only its input is
    asked for), reading the weights from ``model_file``'s own external data: no second copy of them here.
    ``timings`` gains the seconds of the forward passes and of the accumulation."""
    import onnx
    import onnxruntime as ort
    from scipy.linalg.blas import ssyrk
    from threadpoolctl import threadpool_limits

    graph = onnx.load(str(model_file), load_external_data=False)
    _keep_only_outputs(graph, names)
    threads = free_cores()
    options = ort_session_options()  # the weightless graph reads its weights from beside the file
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(model_file.parent))
    session = ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])
    del graph
    wanted = {i.name for i in session.get_inputs()}
    # Upper triangles, column-major: syrk updates them in place.
    sums: dict[str, np.ndarray] = {}
    pending: dict[str, list[np.ndarray]] = {name: [] for name in names}
    tokens = pending_tokens = 0
    forward = accumulate = 0.0
    for index, feed in enumerate(feeds):
        began = time.perf_counter()
        values = session.run(names, {k: v for k, v in feed.items() if k in wanted})
        forward += time.perf_counter() - began
        began = time.perf_counter()
        for name, value in zip(names, values, strict=True):
            pending[name].append(value.reshape(-1, value.shape[-1]))
        count = values[0].reshape(-1, values[0].shape[-1]).shape[0]
        tokens, pending_tokens = tokens + count, pending_tokens + count
        del values
        if pending_tokens >= CHUNK_TOKENS or index == len(feeds) - 1:
            for name, parts in pending.items():
                x = np.concatenate(parts).astype(np.float32, copy=False)
                total = sums.setdefault(name, np.zeros((x.shape[1], x.shape[1]), dtype=np.float32, order="F"))
                # x.T is column-major [K, tokens]: C += x.T @ x without a copy of x
                with threadpool_limits(limits=threads):
                    ssyrk(1.0, x.T, beta=1.0, c=total, trans=0, lower=0, overwrite_c=1)
                parts.clear()
            pending_tokens = 0
        accumulate += time.perf_counter() - began
    del session
    from autotune.device import release_memory

    release_memory()  # the session's weights, back to the OS before the caller loads its own
    began = time.perf_counter()
    out: dict[str, np.ndarray] = {}
    for name in list(sums):
        upper = sums.pop(name)
        full = np.triu(upper) + np.triu(upper, 1).T
        del upper
        full /= max(tokens, 1)
        out[name] = full
    accumulate += time.perf_counter() - began
    if timings is not None:
        timings["calibration_forward"] = timings.get("calibration_forward", 0.0) + forward
        timings["hessian_accumulation"] = timings.get("hessian_accumulation", 0.0) + accumulate
    return out


def _keep_only_outputs(graph: Any, names: list[str]) -> None:
    """``graph`` (weights not loaded) reduced to the nodes that ``names`` depend on, with ``names`` as its outputs."""
    import onnx

    nodes = list(graph.graph.node)
    producers = {out: index for index, node in enumerate(nodes) for out in node.output}
    stack, needed = list(names), set()
    while stack:
        index = producers.get(stack.pop())
        if index is None or index in needed:
            continue
        needed.add(index)
        stack.extend(i for i in nodes[index].input if i)
    kept = [node for index, node in enumerate(nodes) if index in needed]
    used = {i for node in kept for i in node.input}
    graph.graph.ClearField("node")
    graph.graph.node.extend(kept)
    graph.graph.ClearField("output")
    graph.graph.output.extend(onnx.ValueInfoProto(name=name) for name in names)
    initializers = [t for t in graph.graph.initializer if t.name in used]
    graph.graph.ClearField("initializer")
    graph.graph.initializer.extend(initializers)
    inputs = [i for i in graph.graph.input if i.name in used]
    graph.graph.ClearField("input")
    graph.graph.input.extend(inputs)
