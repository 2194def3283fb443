"""Scoring backends: the same operations on an ONNX folder (onnxruntime-genai) and an HF folder
(PyTorch), so accuracy and latency are measured the same way on the built model and the baseline.

Label scoring of many rows (``score_labels``) is batched: an fp32/fp16 ONNX folder through an
onnxruntime session on its model.onnx (:mod:`autotune.evaluation.scoring`), the PyTorch model with its
KV cache; a quantized ONNX build keeps the per-row genai path (see ``scoring.QUANTIZED_OPS``).

Both tokenise with the model folder's Hugging Face tokenizer through :func:`autotune.data.encode_example`,
exactly as training did.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import cached_property
from typing import Any

import numpy as np

from autotune.evaluation.base import EvalModel
from autotune.evaluation.scoring import (
    OrtLabelScorer,
    UnsupportedGraph,
    chunk_rows,
    log_probs_at,
    prefill_batch,
    prompt_scores,
    teacher_forced,
)
from autotune.providers import provider as provider_row
from autotune.threads import genai_session_overlay


def log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class Backend(ABC):
    def __init__(self, model: EvalModel, *, provider: str, trust_remote_code: bool = False) -> None:
        self.model = model
        self.provider = provider
        self.trust_remote_code = trust_remote_code

    @cached_property
    def tokenizer(self) -> Any:
        """The folder's Hugging Face tokenizer, loaded on first use (a latency process never needs it)."""
        from autotune.models.loading import load_tokenizer

        return load_tokenizer(self.model.path, trust_remote_code=self.trust_remote_code)

    def token_ids(self, text: str) -> list[int]:
        """``text`` as token ids, without special tokens (for prompts whose content does not matter: latency)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    @abstractmethod
    def continuation_logprobs(self, prompt_ids: list[int], continuations: list[list[int]]) -> tuple[list[float], float]:
        """Sum of log-probabilities of each continuation after the prompt, and the prompt's own NLL
        (tokens 1..n given their prefix), so perplexity comes from the same forward passes."""

    def score_labels(self, prompts: list[list[int]], continuations: list[list[int]], *,
                     batch_rows: int = 16) -> list[tuple[list[float], float]]:
        """:meth:`continuation_logprobs` for many prompts against the same continuations (the labels).
        This default scores one row at a time; a backend that can batch rows overrides it."""
        return [self.continuation_logprobs(p, continuations) for p in prompts]

    @abstractmethod
    def sequence_nll(self, ids: list[int], start: int) -> tuple[float, int]:
        """(total negative log-likelihood, token count) of ids[start:] given what precedes."""

    @abstractmethod
    def sequence_logits(self, ids: list[int]) -> np.ndarray:
        """The logits at every position of one sequence (length, vocab)."""

    def forced_logprobs(self, pairs: list[tuple[list[int], list[int]]], *, batch_rows: int = 16) -> list[tuple[float, bool]]:
        """Per (context, continuation): the continuation's summed log-probability and whether it is the greedy
        decode, teacher-forced (:func:`autotune.evaluation.scoring.teacher_forced`). This default runs one
        sequence at a time; a backend that can batch rows overrides it."""

        def one_by_one(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
            rows = [self.sequence_logits([int(t) for t in row[: int(m.sum())]]) for row, m in zip(ids, mask, strict=True)]
            out = np.zeros((len(rows), ids.shape[1], rows[0].shape[-1]), dtype=np.float32)
            for r, logits in enumerate(rows):
                out[r, : len(logits)] = logits
            return out

        return teacher_forced(one_by_one, pairs, pad_id=0, batch_rows=1)

    @property
    def max_length(self) -> int:
        """The longest sequence the model takes (its context length)."""
        return 2048

    @abstractmethod
    def generate(self, prompt_ids: list[int], max_new_tokens: int, *, ignore_eos: bool = False,
                 stop: Callable[[list[int]], bool] | None = None) -> tuple[list[int], float, list[float]]:
        """Greedy tokens, seconds to the first token (prefill), and seconds of each later token.

        ``ignore_eos`` decodes exactly ``max_new_tokens`` tokens (for latency measurements); ``stop(tokens)``
        ends the decode early when it returns True (a template's terminator)."""


class GenaiBackend(Backend):
    """An ONNX folder through onnxruntime-genai on the target execution provider."""

    def __init__(self, model: EvalModel, *, provider: str, trust_remote_code: bool = False) -> None:
        super().__init__(model, provider=provider, trust_remote_code=trust_remote_code)
        import onnxruntime_genai as og

        self.og = og
        self.eos = set(self._eos_ids())
        self._scorer: OrtLabelScorer | None | bool = False  # False: not tried yet; None: graph unsupported
        self._forcer: OrtLabelScorer | None | bool = False  # the same for teacher forcing (quantized graphs too)
        self.label_scoring = "not yet decided"  # which path score_labels took, and why (for reports)

    def token_ids(self, text: str) -> list[int]:
        # onnxruntime-genai's own tokenizer: the latency process then imports neither transformers nor torch.
        return [int(t) for t in self.og.Tokenizer(self.genai_model).encode(text)]

    @cached_property
    def genai_model(self) -> Any:
        # Loaded on first use: batched label scoring runs on its own onnxruntime session and never needs it.
        config = self.og.Config(str(self.model.path))
        overlay = genai_session_overlay()
        if overlay is not None:  # run --jobs: this job's share of the cores, not every core
            config.overlay(overlay)
        config.clear_providers()
        ep = provider_row(self.provider).genai
        if ep:
            config.append_provider(ep)
        return self.og.Model(config)

    def _eos_ids(self) -> list[int]:
        cfg = json.loads((self.model.path / "genai_config.json").read_text())
        eos = cfg.get("model", {}).get("eos_token_id", [])
        return eos if isinstance(eos, list) else [eos]

    @cached_property
    def rewind_limit(self) -> int | None:
        """Tokens a sequence may hold and still be rewound: a sliding-window model's windowed KV cache keeps
        at least ``window_size`` positions (genai adds its slack) and refuses a rewind to a position it has
        evicted; None: no window, any rewind works."""
        decoder = json.loads((self.model.path / "genai_config.json").read_text())["model"]["decoder"]
        window = decoder.get("sliding_window") or {}
        size = int(window.get("window_size") or 0)
        return size if size > 0 and window.get("layers") else None

    def _generator(self, max_length: int) -> Any:
        params = self.og.GeneratorParams(self.genai_model)
        params.set_search_options(max_length=max_length, do_sample=False, batch_size=1)
        return self.og.Generator(self.genai_model, params)

    def score_labels(self, prompts: list[list[int]], continuations: list[list[int]], *,
                     batch_rows: int = 16) -> list[tuple[list[float], float]]:
        if self._scorer is False:
            try:
                self._scorer = OrtLabelScorer(self.model.path, provider=self.provider)
                self.label_scoring = "batched (onnxruntime session)"
            except UnsupportedGraph as exc:
                self._scorer = None  # a graph the batched path does not score as the per-row path does
                self.label_scoring = f"per row (onnxruntime-genai): {exc}"
        if self._scorer is None:
            return super().score_labels(prompts, continuations, batch_rows=batch_rows)
        assert isinstance(self._scorer, OrtLabelScorer)
        return self._scorer.score(prompts, continuations, batch_rows=batch_rows)

    def continuation_logprobs(self, prompt_ids: list[int], continuations: list[list[int]]) -> tuple[list[float], float]:
        """One row through onnxruntime-genai: the prompt once, then each label after a rewind."""
        longest = max(len(c) for c in continuations)
        gen = self._generator(len(prompt_ids) + longest + 1)
        gen.append_tokens(prompt_ids)
        prompt_logp = log_softmax(gen.get_output("logits")[0])
        prompt_nll = -sum(float(prompt_logp[j - 1, prompt_ids[j]]) for j in range(1, len(prompt_ids)))
        first = prompt_logp[-1]
        # Past a sliding window's cache the prompt's positions may be evicted: each label then runs on a
        # fresh generator, the prompt again with it (the same logits: the same tokens, from position 0).
        fresh = self.rewind_limit is not None and len(prompt_ids) + longest - 1 > self.rewind_limit
        scores = []
        for cont in continuations:
            score = float(first[cont[0]])
            if len(cont) > 1:
                if fresh:
                    gen = self._generator(len(prompt_ids) + longest + 1)
                    gen.append_tokens(prompt_ids + cont[:-1])
                else:
                    gen.rewind_to(len(prompt_ids))
                    gen.append_tokens(cont[:-1])
                rest = log_softmax(gen.get_output("logits")[0][-(len(cont) - 1):])
                score += float(sum(rest[j, cont[j + 1]] for j in range(len(cont) - 1)))
            scores.append(score)
        return scores, prompt_nll

    @property
    def max_length(self) -> int:
        cfg = json.loads((self.model.path / "genai_config.json").read_text())["model"]
        return int(cfg.get("context_length") or 2048)

    def sequence_logits(self, ids: list[int]) -> np.ndarray:
        gen = self._generator(len(ids) + 1)
        gen.append_tokens(ids)
        return np.asarray(gen.get_output("logits")[0])

    def forced_logprobs(self, pairs: list[tuple[list[int], list[int]]], *, batch_rows: int = 16) -> list[tuple[float, bool]]:
        """Batched in the folder's own onnxruntime session where the graph allows (any precision: every position
        is a prompt position), else one sequence at a time through onnxruntime-genai."""
        if self._forcer is False:
            try:
                self._forcer = OrtLabelScorer(self.model.path, provider=self.provider, prefill_only=True)
            except UnsupportedGraph:
                self._forcer = None
        if self._forcer is None:
            return super().forced_logprobs(pairs, batch_rows=batch_rows)
        assert isinstance(self._forcer, OrtLabelScorer)
        return teacher_forced(self._forcer.prefill_logits, pairs, pad_id=self._forcer.pad_id, batch_rows=batch_rows)

    def sequence_nll(self, ids: list[int], start: int) -> tuple[float, int]:
        gen = self._generator(len(ids) + 1)
        gen.append_tokens(ids)
        logp = log_softmax(gen.get_output("logits")[0])
        nll = -sum(float(logp[j - 1, ids[j]]) for j in range(max(start, 1), len(ids)))
        return nll, len(ids) - max(start, 1)

    def generate(self, prompt_ids: list[int], max_new_tokens: int, *, ignore_eos: bool = False,
                 stop: Callable[[list[int]], bool] | None = None) -> tuple[list[int], float, list[float]]:
        params = self.og.GeneratorParams(self.genai_model)
        total = len(prompt_ids) + max_new_tokens
        params.set_search_options(max_length=total, do_sample=False, batch_size=1, **({"min_length": total} if ignore_eos else {}))
        gen = self.og.Generator(self.genai_model, params)
        began = time.perf_counter()
        gen.append_tokens(prompt_ids)
        gen.generate_next_token()
        ttft = time.perf_counter() - began
        tokens = [int(gen.get_next_tokens()[0])]
        steps: list[float] = []
        while (len(tokens) < max_new_tokens and not gen.is_done() and (ignore_eos or tokens[-1] not in self.eos)
               and not (stop and stop(tokens))):
            t0 = time.perf_counter()
            gen.generate_next_token()
            steps.append(time.perf_counter() - t0)
            tokens.append(int(gen.get_next_tokens()[0]))
        return tokens, ttft, steps


class TorchBackend(Backend):
    """An HF folder in PyTorch (fp32, CPU): the baseline before any pass."""

    def __init__(self, model: EvalModel, *, provider: str, trust_remote_code: bool = False) -> None:
        super().__init__(model, provider=provider, trust_remote_code=trust_remote_code)
        from autotune.models.loading import load_causal_lm

        self.torch_model = load_causal_lm(model.path, trust_remote_code=trust_remote_code).eval()
        self.eos = {self.tokenizer.eos_token_id}

    def _logits(self, ids: list[int]) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.torch_model(torch.tensor([ids])).logits[0].float().numpy()

    def continuation_logprobs(self, prompt_ids: list[int], continuations: list[list[int]]) -> tuple[list[float], float]:
        import torch

        width = len(prompt_ids) + max(len(c) for c in continuations)
        pad = self.tokenizer.pad_token_id or 0
        batch = torch.full((len(continuations), width), pad, dtype=torch.long)
        mask = torch.zeros_like(batch)
        for i, cont in enumerate(continuations):
            row = prompt_ids + cont
            batch[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        with torch.no_grad():
            logits = self.torch_model(input_ids=batch, attention_mask=mask).logits.float().numpy()
        scores = []
        n = len(prompt_ids)
        for i, cont in enumerate(continuations):
            logp = log_softmax(logits[i])
            scores.append(float(sum(logp[n - 1 + j, cont[j]] for j in range(len(cont)))))
        first = log_softmax(logits[0, :n])
        prompt_nll = -sum(float(first[j - 1, prompt_ids[j]]) for j in range(1, n))
        return scores, prompt_nll

    def score_labels(self, prompts: list[list[int]], continuations: list[list[int]], *,
                     batch_rows: int = 16) -> list[tuple[list[float], float]]:
        """Several rows per pass, each prompt computed once: a right-padded prefill with its KV cache,
        then every label of every row on that cache (explicit positions, the prompt padding masked).
        The per-row path feeds prompt + label once per label, so the prompt cost 4x for 4 labels."""
        import torch

        results: list[tuple[list[float], float]] = [([], 0.0)] * len(prompts)
        pad = self.tokenizer.pad_token_id or 0
        alive = [k for k, c in enumerate(continuations) if len(c) > 1]
        width = max((len(c) - 1 for c in continuations), default=0)
        for batch in chunk_rows([len(p) for p in prompts], batch_rows):
            ids, mask = prefill_batch([prompts[i] for i in batch], pad)
            lengths = mask.sum(axis=1)
            with torch.no_grad():
                out = self.torch_model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), use_cache=True)
                scores, prompt_nll = prompt_scores(out.logits.float().numpy(), ids, lengths, continuations)
                cache = out.past_key_values
                if alive and not hasattr(cache, "batch_repeat_interleave"):
                    # A remote-code model with a legacy (tuple) cache: this batch row by row.
                    for i in batch:
                        results[i] = self.continuation_logprobs(prompts[i], continuations)
                    continue
                if alive:
                    cache.batch_repeat_interleave(len(alive))  # sequence r * len(alive) + a: row r, label alive[a]
                    seq_row = np.repeat(np.arange(len(batch)), len(alive))
                    seq_label = np.tile(np.array(alive), len(batch))
                    label_ids = np.full((len(seq_row), width), pad, dtype=np.int64)
                    for n, k in enumerate(seq_label):
                        label_ids[n, : len(continuations[k]) - 1] = continuations[k][:-1]
                    label_mask = np.concatenate([mask[seq_row], np.ones_like(label_ids)], axis=1)
                    positions = lengths[seq_row][:, None] + np.arange(width)[None, :]
                    logits = self.torch_model(input_ids=torch.from_numpy(label_ids), attention_mask=torch.from_numpy(label_mask),
                                              position_ids=torch.from_numpy(positions), past_key_values=cache,
                                              use_cache=True).logits.float().numpy()
                    for n, (r, k) in enumerate(zip(seq_row, seq_label, strict=True)):
                        cont = continuations[k]
                        steps = np.arange(len(cont) - 1)
                        scores[r, k] += float(log_probs_at(logits[n, steps], np.array(cont[1:])).sum())
            for r, i in enumerate(batch):
                results[i] = ([float(x) for x in scores[r]], float(prompt_nll[r]))
        return results

    @property
    def max_length(self) -> int:
        config = self.torch_model.config
        for name in ("max_position_embeddings", "n_positions", "n_ctx"):
            if isinstance(getattr(config, name, None), int):
                return int(getattr(config, name))
        return 2048

    def sequence_logits(self, ids: list[int]) -> np.ndarray:
        return self._logits(ids)

    def forced_logprobs(self, pairs: list[tuple[list[int], list[int]]], *, batch_rows: int = 16) -> list[tuple[float, bool]]:
        import torch

        def logits_of(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                out = self.torch_model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
            return out.logits.float().numpy()

        return teacher_forced(logits_of, pairs, pad_id=self.tokenizer.pad_token_id or 0, batch_rows=batch_rows)

    def sequence_nll(self, ids: list[int], start: int) -> tuple[float, int]:
        logp = log_softmax(self._logits(ids))
        nll = -sum(float(logp[j - 1, ids[j]]) for j in range(max(start, 1), len(ids)))
        return nll, len(ids) - max(start, 1)

    def generate(self, prompt_ids: list[int], max_new_tokens: int, *, ignore_eos: bool = False,
                 stop: Callable[[list[int]], bool] | None = None) -> tuple[list[int], float, list[float]]:
        import torch

        with torch.no_grad():
            began = time.perf_counter()
            out = self.torch_model(torch.tensor([prompt_ids]), use_cache=True)
            past = out.past_key_values
            token = int(out.logits[0, -1].argmax())
            ttft = time.perf_counter() - began
            tokens, steps = [token], []
            while len(tokens) < max_new_tokens and (ignore_eos or token not in self.eos) and not (stop and stop(tokens)):
                t0 = time.perf_counter()
                out = self.torch_model(torch.tensor([[token]]), past_key_values=past, use_cache=True)
                past = out.past_key_values
                token = int(out.logits[0, -1].argmax())
                steps.append(time.perf_counter() - t0)
                tokens.append(token)
        return tokens, ttft, steps


def open_backend(model: EvalModel, *, provider: str, trust_remote_code: bool = False) -> Backend:
    cls = GenaiBackend if model.kind == "onnx" else TorchBackend
    return cls(model, provider=provider, trust_remote_code=trust_remote_code)
