"""Batched label scoring on an ONNX folder: several rows, and every label of each row, per forward pass.

onnxruntime-genai scores one sequence at a time (a rewind per label), so label scoring paid one
prefill and one short pass per label for every row. Here the folder's own ``model.onnx`` runs in an
onnxruntime session with the inputs ``genai_config.json`` declares:

1. prefill: B prompts, right-padded, empty KV cache (past length 0). GroupQueryAttention reads each
   row's length from ``attention_mask`` (``seqlens_k = sum(mask) - 1``) and, on a first prompt,
   expects right padding: positions 0..n-1 are the row's tokens, what follows is ignored.
2. labels: the prompt's KV cache repeated once per label (B x L sequences), then one token per step
   (GroupQueryAttention refuses batch > 1 with several new tokens and a past). For a row of length n
   at step j the mask holds n + j + 1 ones (a prefix: GQA keeps each row's cache contiguous from 0
   and derives the rotary position n + j from it); a label leaves the batch after its last token.

Sliding-window layers (Gemma 2/3, Mistral): the builder marks their GroupQueryAttention
``sliding_window_cache``, a window-sized past/present buffer that refuses an empty past ("KV cache capacity
(0) must be at least local_window_size") and a right-padded first prompt. onnxruntime-genai gives each such
layer a buffer of the window's size (+ slack) per sequence; here that would be one per row and label (Gemma 2
2B: 13 layers x 32 MiB fp32 per sequence for the window alone, ~28 GB for 16 rows x 4 labels). So the
session runs the graph with ``sliding_window_cache`` 0 (:func:`autotune.models.kv_cache.full_length_caches`):
the operator's full-length cache, growing as above, while ``local_window_size`` still masks every key
outside the window: the same attention, so the scores equal genai's on its windowed caches
(tests/models/test_families.py, with prompts and labels longer than the window).

Only the builder's GroupQueryAttention decoder without a ``position_ids`` input and without quantized
MatMuls (fp32/fp16 builds, see ``QUANTIZED_OPS``) is handled; any other graph raises
:class:`UnsupportedGraph` and the caller scores one row at a time through genai.

Why int4/int8 builds are not batched (issue 22 item 2, measured 2026-12-04 on the 2-core EPYC, load ~5):
identical predictions need both paths on the same MatMulNBits kernels, i.e. teacher forcing (prompt +
label[:-1] as one sequence per row and distinct label prefix, scored inside the prefill, and the per-row
genai path the same way). Built and tried (commit ab28bde): scores equal to the last bit (max difference
0.0, 80/80 predictions on SmolLM2, tiny int4/int8 too), but it recomputes the prompt once per label (4 on
the tone labels of 2-4 tokens): SmolLM2 80 rows, int4 66 s batched / 45 s forced per row against 18 s for
today's per-row path (prompt once, a short pass per label); int8 51 / 53 s against 27 s. Batched label
steps on the prompt's KV cache are fast but run MatMulNBits with several rows per step where genai runs
one (77-79/80 predictions agree). So these graphs keep the per-row path: its speed, its numbers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from autotune.models.kv_cache import full_length_caches
from autotune.providers import provider as provider_row
from autotune.threads import ort_session_options

__all__ = ["OrtLabelScorer", "UnsupportedGraph", "chunk_rows", "decode_mask", "log_probs_at", "prefill_batch", "prompt_scores",
           "teacher_forced"]

# Rows x padded prompt length per prefill: bounds the (rows, length, vocab) logits held at once
# (SmolLM2: 768 x 49152 float32 = 150 MB).
MAX_BATCH_TOKENS = 768


# Quantized MatMuls take another kernel path for one new token per sequence than for a prompt
# (int4/int8 MatMulNBits on SmolLM2: logits up to ~3 % apart, predictions changed on 1 of 80 rows at
# int4), or quantize activations over the whole batch (dynamic quantization): their label steps would
# not score what the per-row path scores. Measured on SmolLM2 they gain little or lose (int4: 0.75x,
# int8: 1.3x; fp32: 5x), so these graphs keep the per-row path.
QUANTIZED_OPS = frozenset({"MatMulNBits", "MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QLinearMatMul",
                           "DynamicQuantizeLinear", "GatherBlockQuantized", "QMoE"})


# Weight-only quantized ops: each row's activations are its own, so a row's logits do not depend on the rows
# batched with it (dynamic quantization's activation scale, taken over the whole batch, does).
WEIGHT_ONLY_OPS = frozenset({"MatMulNBits", "GatherBlockQuantized"})


class UnsupportedGraph(Exception):
    """The folder's decoder is not one this scorer knows how to batch."""


def prefill_batch(prompts: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded ``input_ids`` and ``attention_mask`` (1 on each row's own tokens)."""
    width = max(len(p) for p in prompts)
    ids = np.full((len(prompts), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(prompts), width), dtype=np.int64)
    for i, prompt in enumerate(prompts):
        ids[i, : len(prompt)] = prompt
        mask[i, : len(prompt)] = 1
    return ids, mask


def decode_mask(lengths: np.ndarray, step: int, past_width: int) -> np.ndarray:
    """Mask of label step ``step`` (0-based): a prefix of ``length + step + 1`` ones over the past
    buffer plus the new token, so GQA sees a past of ``length + step`` and puts the new token there."""
    width = past_width + 1
    return (np.arange(width)[None, :] < (lengths + step + 1)[:, None]).astype(np.int64)


def chunk_rows(lengths: list[int], batch_rows: int, max_tokens: int = MAX_BATCH_TOKENS) -> list[list[int]]:
    """Row indices grouped into batches, shortest prompts first (little padding), each batch at most
    ``batch_rows`` rows and ``max_tokens`` padded prompt tokens (a single long row stays alone)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and (len(current) + 1 > batch_rows or (len(current) + 1) * lengths[i] > max_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def log_probs_at(logits: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """log softmax(logits)[..., token], without materialising the whole log-softmax: exp in the
    logits' own float32 (the bulk of the work), sums and the result in float64."""
    if logits.dtype == np.float16:
        logits = logits.astype(np.float32)  # an fp16 build's logits: exp in fp16 would lose the tail
    top = logits.max(axis=-1, keepdims=True)
    total = np.exp(logits - top).sum(axis=-1, dtype=np.float64)
    picked = np.take_along_axis(logits, tokens[..., None], axis=-1)[..., 0].astype(np.float64)
    return picked - top[..., 0].astype(np.float64) - np.log(total)


def prompt_scores(logits: np.ndarray, ids: np.ndarray, lengths: np.ndarray, conts: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """From a right-padded prefill's logits: each label's first-token log-probability (rows, labels)
    and each prompt's NLL (token j given tokens < j, j = 1..n-1, read at the row's own positions)."""
    rows = len(lengths)
    rows_at, cols_at = np.nonzero(np.arange(ids.shape[1])[None, :] < (lengths - 1)[:, None])
    token_lp = log_probs_at(logits[rows_at, cols_at], ids[rows_at, cols_at + 1])
    prompt_nll = -np.bincount(rows_at, weights=token_lp, minlength=rows)
    last = logits[np.arange(rows), lengths - 1]  # (rows, vocab): the first label token's distribution
    scores = np.zeros((rows, len(conts)))
    for k, cont in enumerate(conts):
        scores[:, k] = log_probs_at(last, np.full(rows, cont[0]))
    return scores, prompt_nll


def teacher_forced(logits_of: Callable[[np.ndarray, np.ndarray], np.ndarray], pairs: list[tuple[list[int], list[int]]], *,
                   pad_id: int, batch_rows: int = 16) -> list[tuple[float, bool]]:
    """Per (context, continuation) pair: the continuation's summed log-probability and whether each of its
    tokens is the greedy one, from one forward pass over ``(context + continuation)[:-1]`` (teacher forcing,
    as lm-evaluation-harness scores a causal LM). ``logits_of(ids, mask)``: a right-padded batch's logits."""
    inputs = [(context + continuation)[:-1] for context, continuation in pairs]
    if any(not context or not continuation for context, continuation in pairs):
        raise ValueError("teacher forcing needs a non-empty context and continuation")
    results: list[tuple[float, bool]] = [(0.0, False)] * len(pairs)
    for batch in chunk_rows([len(x) for x in inputs], batch_rows):
        ids, mask = prefill_batch([inputs[i] for i in batch], pad_id)
        logits = logits_of(ids, mask)
        for r, i in enumerate(batch):
            continuation = np.array(pairs[i][1], dtype=np.int64)
            end = len(inputs[i])
            at = logits[r, end - len(continuation): end]  # the logits that predict each continuation token
            results[i] = (float(log_probs_at(at, continuation).sum()), bool((at.argmax(axis=-1) == continuation).all()))
    return results


class OrtLabelScorer:
    """The folder's decoder in an onnxruntime session, scoring labels in batches.

    ``prefill_only``: only :meth:`prefill_logits` will be used (teacher forcing), so a weight-only quantized graph
    is accepted: every position is computed by the prompt's kernels, as the per-row path computes a prompt. A
    dynamically quantized one is not: its activation scale would span every row of the batch."""

    def __init__(self, folder: Path, *, provider: str, prefill_only: bool = False) -> None:
        import onnx
        import onnxruntime as ort

        decoder = json.loads((folder / "genai_config.json").read_text())["model"]["decoder"]
        inputs, outputs = decoder.get("inputs", {}), decoder.get("outputs", {})
        path = folder / decoder.get("filename", "model.onnx")
        if set(inputs) - {"input_ids", "attention_mask", "past_key_names", "past_value_names"}:
            raise UnsupportedGraph(f"inputs {sorted(inputs)}")  # position_ids, embeddings, ...: not batched here
        graph = onnx.load(str(path), load_external_data=False)
        ops = {node.op_type for node in graph.graph.node}
        if "GroupQueryAttention" not in ops:
            raise UnsupportedGraph("no GroupQueryAttention")  # the mask semantics above are GQA's
        refused = ops & (QUANTIZED_OPS - WEIGHT_ONLY_OPS if prefill_only else QUANTIZED_OPS)
        if refused:
            raise UnsupportedGraph(f"quantized MatMul ({', '.join(sorted(refused))})")
        self.layers = int(decoder["num_hidden_layers"])
        self.kv_heads = int(decoder["num_key_value_heads"])
        self.head_size = int(decoder["head_size"])
        self.names = {
            "input_ids": inputs.get("input_ids", "input_ids"),
            "attention_mask": inputs.get("attention_mask", "attention_mask"),
            "logits": outputs.get("logits", "logits"),
        }
        self.past = [(inputs.get("past_key_names", "past_key_values.%d.key") % i,
                      inputs.get("past_value_names", "past_key_values.%d.value") % i) for i in range(self.layers)]
        self.present = [(outputs.get("present_key_names", "present.%d.key") % i,
                         outputs.get("present_value_names", "present.%d.value") % i) for i in range(self.layers)]
        ep = provider_row(provider).ort_name
        providers = [ep] if ep == "CPUExecutionProvider" else [ep, "CPUExecutionProvider"]
        options = ort_session_options()  # run --jobs: its core share
        if full_length_caches(graph):  # sliding-window layers: their full-length cache (see the module docstring)
            options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(path.parent))
            self.session = ort.InferenceSession(graph.SerializeToString(), options, providers=providers)
        else:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        del graph
        types = {i.name: i.type for i in self.session.get_inputs()}
        self.kv_dtype = np.float16 if types.get(self.past[0][0]) == "tensor(float16)" else np.float32
        self.output_names = [self.names["logits"], *(n for pair in self.present for n in pair)]
        # Pads sit only after a row's own tokens, where nothing that is scored can see them.
        pad = json.loads((folder / "genai_config.json").read_text())["model"].get("pad_token_id", 0)
        self.pad_id = int(pad[0] if isinstance(pad, list) else pad or 0)

    def _run(self, ids: np.ndarray, mask: np.ndarray, past: list[tuple[Any, Any]]) -> tuple[np.ndarray, list[tuple[Any, Any]]]:
        feeds: dict[str, np.ndarray] = {self.names["input_ids"]: ids, self.names["attention_mask"]: mask}
        for (k_name, v_name), (k, v) in zip(self.past, past, strict=True):
            feeds[k_name], feeds[v_name] = k, v
        out = self.session.run(self.output_names, feeds)
        present = [(out[1 + 2 * i], out[2 + 2 * i]) for i in range(self.layers)]
        return out[0], present

    def prefill_logits(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Logits of a right-padded batch run from an empty KV cache (rows, width, vocab)."""
        empty = np.zeros((len(ids), self.kv_heads, 0, self.head_size), dtype=self.kv_dtype)
        return self._run(ids, mask, [(empty, empty)] * self.layers)[0]

    def score(self, prompts: list[list[int]], continuations: list[list[int]], *,
              batch_rows: int = 16) -> list[tuple[list[float], float]]:
        """Per prompt: each continuation's summed log-probability after it, and the prompt's own NLL."""
        if not prompts:
            return []
        if any(not p for p in prompts) or any(not c for c in continuations):
            raise ValueError("label scoring needs non-empty prompts and continuations")
        results: list[tuple[list[float], float]] = [([], 0.0)] * len(prompts)
        for batch in chunk_rows([len(p) for p in prompts], batch_rows):
            for i, scored in zip(batch, self._score_batch([prompts[i] for i in batch], continuations), strict=True):
                results[i] = scored
        return results

    def _score_batch(self, prompts: list[list[int]], conts: list[list[int]]) -> list[tuple[list[float], float]]:
        rows = len(prompts)
        lengths = np.array([len(p) for p in prompts])
        ids, mask = prefill_batch(prompts, self.pad_id)
        empty = np.zeros((rows, self.kv_heads, 0, self.head_size), dtype=self.kv_dtype)
        logits, present = self._run(ids, mask, [(empty, empty)] * self.layers)
        scores, prompt_nll = prompt_scores(logits, ids, lengths, conts)
        # Later label tokens, one step at a time. Sequence r * labels + k is row r's label k, its cache
        # the row's prompt cache; a label drops out of the batch once its last token is scored.
        alive = np.array([k for k, c in enumerate(conts) if len(c) > 1])
        if alive.size:
            past = [(np.repeat(k, len(alive), axis=0), np.repeat(v, len(alive), axis=0)) for k, v in present]
            seq_row = np.repeat(np.arange(rows), len(alive))
            seq_label = np.tile(alive, rows)
            step = 0
            while seq_row.size:
                step_ids = np.array([conts[k][step] for k in seq_label], dtype=np.int64)[:, None]
                step_mask = decode_mask(lengths[seq_row], step, past[0][0].shape[2])
                step_logits, past = self._run(step_ids, step_mask, past)
                nexts = np.array([conts[k][step + 1] for k in seq_label], dtype=np.int64)
                np.add.at(scores, (seq_row, seq_label), log_probs_at(step_logits[:, 0], nexts))
                step += 1
                going_on = np.array([len(conts[k]) > step + 1 for k in seq_label], dtype=bool)
                if not going_on.all():
                    seq_row, seq_label = seq_row[going_on], seq_label[going_on]
                    past = [(k[going_on], v[going_on]) for k, v in past]
        return [([float(x) for x in scores[r]], float(prompt_nll[r])) for r in range(rows)]
