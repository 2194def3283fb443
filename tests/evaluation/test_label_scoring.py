"""Batched label scoring (an onnxruntime session on the ONNX folder, several rows and every label per
pass) against the per-row onnxruntime-genai path it replaces: same scores, same predictions, whatever
the rows' lengths and whichever rows share a batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from autotune.evaluation import scoring
from autotune.evaluation.backends import Backend, GenaiBackend
from autotune.evaluation.base import EvalModel
from tests.conftest import TEMPLATE

LABELS = ["joy", "surprise", "fear", "sadness"]


@pytest.fixture(scope="module")
def onnx_folder(tiny_onnx: Path) -> Path:
    return tiny_onnx  # fp32: the batched path (a quantized build keeps the per-row path, see below)


@pytest.fixture(scope="module")
def backend(onnx_folder: Path) -> GenaiBackend:
    return GenaiBackend(EvalModel(path=onnx_folder, kind="onnx", key=""), provider="CPUExecutionProvider")


def prompts_of(backend: GenaiBackend, tone_rows: list[dict[str, str]]) -> list[list[int]]:
    """Prompts of very different lengths (one token up to ~70), in no particular order."""
    tok = backend.tokenizer
    phrases = [r["phrase"] for r in tone_rows[:17]] + ["a", "", "sad " * 12, "x"]
    prompts = [list(tok(TEMPLATE.split("{tone}")[0].format(phrase=p))["input_ids"]) for p in phrases]
    prompts += [list(tok("fear")["input_ids"])[:1], list(tok("the storm")["input_ids"])]  # a 1-token prompt
    assert len({len(p) for p in prompts}) >= 10 and min(len(p) for p in prompts) == 1
    return prompts


def label_ids(backend: GenaiBackend) -> list[list[int]]:
    tok = backend.tokenizer
    return [list(tok(label, add_special_tokens=False)["input_ids"]) + [tok.eos_token_id] for label in LABELS]


def tolerance(onnx_folder: Path) -> float:
    return 1e-4  # fp32: the same sums in another order


def test_batched_scores_and_predictions_equal_the_per_row_path(backend: GenaiBackend, onnx_folder: Path,
                                                                tone_rows: list[dict[str, str]]) -> None:
    prompts = prompts_of(backend, tone_rows)
    # Labels of 1 to several tokens, so label steps are padded too.
    conts = [*label_ids(backend), label_ids(backend)[0][:1], [7, 9, 11, 13, 15, 17, 19, 21]]
    old = [backend.continuation_logprobs(p, conts) for p in prompts]
    new = backend.score_labels(prompts, conts, batch_rows=5)
    assert isinstance(backend._scorer, scoring.OrtLabelScorer)  # the batched path, not the per-row fallback
    tol = tolerance(onnx_folder)
    for (old_scores, old_nll), (new_scores, new_nll) in zip(old, new, strict=True):
        np.testing.assert_allclose(new_scores, old_scores, atol=tol, rtol=0)
        assert new_nll == pytest.approx(old_nll, abs=tol * 10)
        assert int(np.argmax(new_scores)) == int(np.argmax(old_scores))


def test_a_row_scores_the_same_alone_and_in_any_batch(backend: GenaiBackend, onnx_folder: Path,
                                                      tone_rows: list[dict[str, str]]) -> None:
    prompts = prompts_of(backend, tone_rows)
    conts = label_ids(backend)
    alone = backend.score_labels(prompts, conts, batch_rows=1)
    together = backend.score_labels(prompts, conts, batch_rows=len(prompts))
    reversed_ = backend.score_labels(prompts[::-1], conts, batch_rows=3)[::-1]
    for a, b, c in zip(alone, together, reversed_, strict=True):
        np.testing.assert_allclose(a[0], b[0], atol=tolerance(onnx_folder), rtol=0)
        np.testing.assert_allclose(a[0], c[0], atol=tolerance(onnx_folder), rtol=0)


def test_left_padding_would_be_caught(backend: GenaiBackend, tone_rows: list[dict[str, str]],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison above is sensitive to padding: left-padded prompts (GroupQueryAttention wants
    right padding on a first prompt) change the scores of every shorter row."""
    prompts = prompts_of(backend, tone_rows)
    conts = label_ids(backend)
    right = backend.score_labels(prompts, conts, batch_rows=len(prompts))

    right_padded = scoring.prefill_batch

    def left_padded(rows: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
        ids, mask = right_padded(rows, pad_id)
        shift = [ids.shape[1] - len(r) for r in rows]
        return (np.stack([np.roll(x, s) for x, s in zip(ids, shift, strict=True)]),
                np.stack([np.roll(x, s) for x, s in zip(mask, shift, strict=True)]))

    monkeypatch.setattr(scoring, "prefill_batch", left_padded)
    left = backend.score_labels(prompts, conts, batch_rows=len(prompts))
    longest = max(len(p) for p in prompts)
    differs = [not np.allclose(r[0], l_[0], atol=1e-3) for p, r, l_ in zip(prompts, right, left, strict=True) if len(p) < longest]
    assert sum(differs) >= len(differs) // 2  # most rows come out wrong


def test_padding_layout_masks_and_positions() -> None:
    ids, mask = scoring.prefill_batch([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]  # right padding: each row's tokens at positions 0..n-1
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    # Label step j of a row of length n: GQA takes the past as sum(mask) - 1 = n + j tokens, so the new
    # token gets position n + j and lands right after the row's own cache (a prefix of ones).
    lengths = np.array([3, 1])
    for step in range(3):
        m = scoring.decode_mask(lengths, step, past_width=3 + step)
        assert m.shape == (2, 4 + step)
        assert (m.sum(axis=1) - 1).tolist() == (lengths + step).tolist()
        assert all(row[: row.sum()].all() for row in m)  # ones first, zeros after


def test_batches_are_bounded_and_cover_every_row() -> None:
    lengths = [5, 300, 40, 41, 7, 3, 60]
    batches = scoring.chunk_rows(lengths, batch_rows=3, max_tokens=128)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= 3
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 128


def test_accuracy_evaluator_predicts_the_same_as_the_per_row_path(onnx_folder: Path, tmp_path: Path, tone_file: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from autotune.cache import Cache
    from autotune.config_checks import load_config
    from autotune.evaluation.runner import ModelEvaluator
    from autotune.pipeline import Pipeline
    from tests.conftest import tiny_config

    raw = tiny_config(onnx_folder, tone_file, tmp_path)
    raw["evaluators"] = {"acc": {"metrics": [{"name": "acc", "type": "accuracy",
                                              "sub_types": [{"name": "accuracy"}, {"name": "macro_f1"}, {"name": "perplexity"}],
                                              "user_config": {"batch_rows": 7}}]}}
    raw["engine"]["evaluator"] = "acc"
    config = load_config(raw, base_dir=tmp_path)

    def evaluate() -> dict[str, float]:
        pipeline = Pipeline(config, cache=Cache(config.engine.cache_dir))
        model = EvalModel(path=onnx_folder, kind="onnx", key="k")
        evaluator = ModelEvaluator(config, cache=pipeline.cache, data_loader=pipeline.data, use_cache=False)
        return {k: v.value for k, v in evaluator.evaluate(model).items()}

    batched = evaluate()
    monkeypatch.setattr(GenaiBackend, "score_labels", Backend.score_labels)  # today's per-row path
    per_row = evaluate()
    assert batched["acc-accuracy"] == per_row["acc-accuracy"]
    assert batched["acc-macro_f1"] == per_row["acc-macro_f1"]
    assert batched["acc-perplexity"] == pytest.approx(per_row["acc-perplexity"], rel=1e-3)


def test_a_quantized_build_keeps_the_per_row_path(tiny_model: Path, tmp_path: Path, tone_rows: list[dict[str, str]]) -> None:
    """int4/int8 MatMulNBits take another kernel path for one new token than for a prompt (on SmolLM2 the
    label steps moved logits by ~3 % and changed a prediction), so their labels are scored row by row."""
    from autotune.passes.model_builder import ModelBuilderParams, build_onnx

    build_onnx(tiny_model, tmp_path / "int4", ModelBuilderParams(precision="int4"), provider="CPUExecutionProvider",
               work_dir=tmp_path / "work")
    backend = GenaiBackend(EvalModel(path=tmp_path / "int4", kind="onnx", key=""), provider="CPUExecutionProvider")
    prompts, conts = prompts_of(backend, tone_rows)[:6], label_ids(backend)
    assert backend.score_labels(prompts, conts) == [backend.continuation_logprobs(p, conts) for p in prompts]
    assert backend._scorer is None
    with pytest.raises(scoring.UnsupportedGraph, match="MatMulNBits"):
        scoring.OrtLabelScorer(tmp_path / "int4", provider="CPUExecutionProvider")


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def testlog_probs_at_equal_the_full_log_softmax(dtype: type) -> None:
    from autotune.evaluation.backends import log_softmax

    rng = np.random.default_rng(0)
    logits = (rng.normal(size=(3, 5, 50)) * 8).astype(dtype)
    tokens = rng.integers(0, 50, size=(3, 5))
    expected = np.take_along_axis(log_softmax(logits), tokens[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(scoring.log_probs_at(logits, tokens), expected, atol=1e-5, rtol=0)


def test_pytorch_batched_scores_equal_its_per_row_path(tiny_model: Path, tone_rows: list[dict[str, str]]) -> None:
    """The baseline (PyTorch): prompts once per batch with their KV cache, labels on it (explicit
    positions, prompt padding masked) score what prompt + label, row by row, scores."""
    from autotune.evaluation.backends import TorchBackend

    torch_backend = TorchBackend(EvalModel(path=tiny_model, kind="hf", key=""), provider="CPUExecutionProvider")
    prompts = prompts_of(torch_backend, tone_rows)  # type: ignore[arg-type]
    conts = [*label_ids(torch_backend), [5], [7, 9, 11, 13, 15, 17]]  # type: ignore[arg-type]
    old = [torch_backend.continuation_logprobs(p, conts) for p in prompts]
    new = torch_backend.score_labels(prompts, conts, batch_rows=6)
    for (old_scores, old_nll), (new_scores, new_nll) in zip(old, new, strict=True):
        np.testing.assert_allclose(new_scores, old_scores, atol=1e-4, rtol=0)
        assert new_nll == pytest.approx(old_nll, abs=1e-3)
        assert int(np.argmax(new_scores)) == int(np.argmax(old_scores))
