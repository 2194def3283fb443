"""The training rows as the Trainer reads them: each row templated and tokenised (:func:`tokenize_rows`, labels
masked to the answer where the loss is on it), each batch padded to its own longest row (:class:`PadToLongest`).
Shared by the LoRA fine-tune and the precision probe, which times the same batches."""

from __future__ import annotations

from typing import Any

from autotune.data import encode_row

__all__ = ["PadToLongest", "tokenize_rows"]


def tokenize_rows(tokenizer: Any, data: Any, rows: list[dict[str, Any]], loss_on: str) -> list[dict[str, list[int]]]:
    features = []
    for row in rows:
        ids, prompt_len = encode_row(tokenizer, data.template, row, max_len=data.source_max_len)
        labels = list(ids)
        if loss_on == "answer":
            labels[:prompt_len] = [-100] * prompt_len
        features.append({"input_ids": ids, "labels": labels})
    return features


class PadToLongest:
    """Pad each batch to its own longest row (not to source_max_len): no compute wasted on padding."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, batch: list[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        width = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, b in enumerate(batch):
            n = len(b["input_ids"])
            ids[i, :n] = torch.tensor(b["input_ids"])
            labels[i, :n] = torch.tensor(b["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}
