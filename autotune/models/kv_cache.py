"""The past KV buffers a builder decoder takes on a first prompt, as onnxruntime-genai allocates them.

A full-attention layer's cache starts empty (0 rows) and grows by each step's tokens. A sliding-window
layer (Gemma 2/3, Mistral) is built with GroupQueryAttention ``sliding_window_cache=1``: its past and present
are window-sized buffers of a fixed capacity, and the operator refuses one smaller than its
``local_window_size`` ("KV cache capacity (0) must be at least local_window_size"). onnxruntime-genai gives
such a layer ``window_size + cache_slack`` rows (genai_config ``decoder.sliding_window``); the operator keeps
the most recent positions at rows 0.. and reads each sequence's length from ``seqlens_k`` (the attention
mask), never from the buffer, so zeros of that capacity are an empty cache (:func:`window_rows`, for a feed
of one sequence: GPTQ's and the sensitivity scores' calibration).

The batched label scorer instead runs such a graph with full-length caches (:func:`full_length_caches`):
window-sized buffers for every row and label at once would not fit in memory for a real window (4096).
"""

from __future__ import annotations

from typing import Any

__all__ = ["full_length_caches", "window_rows"]


def window_rows(nodes: Any, decoder: dict[str, Any]) -> dict[str, int]:
    """Past input name (key and value) -> rows of its buffer on a first prompt, for every layer whose
    GroupQueryAttention in ``nodes`` (the graph's, ``graph.node``) has a window-sized cache; a name not
    in the result is a full-length cache, empty on a first prompt. ``decoder``: genai_config's decoder
    section (its ``sliding_window.cache_slack``, the rows genai keeps beyond the window)."""
    from onnx import helper

    slack = max(int((decoder.get("sliding_window") or {}).get("cache_slack") or 0), 0)
    rows: dict[str, int] = {}
    for node in nodes:
        if node.op_type != "GroupQueryAttention" or len(node.input) < 5:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        window = int(attrs.get("local_window_size", -1))
        if attrs.get("sliding_window_cache") == 1 and window > 0:
            for name in node.input[3:5]:  # past_key, past_value
                if name:
                    rows[name] = window + slack
    return rows


def full_length_caches(model: Any) -> bool:
    """Turn ``sliding_window_cache`` off on every GroupQueryAttention of ``model`` (a ModelProto, changed in
    place): its sliding-window layers then take a full-length past that grows by each step's tokens, as the
    other layers do, while ``local_window_size`` still keeps every key outside the window out of the
    attention, so the scores are those of the window-sized cache. True when a node was changed."""
    changed = False
    for node in model.graph.node:
        if node.op_type != "GroupQueryAttention":
            continue
        for attr in node.attribute:
            if attr.name == "sliding_window_cache" and attr.i != 0:
                attr.i = 0
                changed = True
    return changed
