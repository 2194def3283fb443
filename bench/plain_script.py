"""One autotune trial's work written by hand, without autotune: LoRA -> merge -> int4 ONNX -> accuracy.

peft LoRA with transformers' Trainer (prompt tokens + answer tokens + EOS, loss on the answer only,
batches padded to their longest row), ``merge_and_unload``, onnxruntime-genai's model builder in
process, then label scoring on the held-out rows with onnxruntime-genai. The data split matches
autotune's (de-duplicate on the prompt, shuffle with seed 0, held-out rows first, the last
min(32, train/5) training rows kept out of training as autotune's validation rows).
Prints one JSON line: accuracy and seconds per phase.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
PROMPT = "### Text: {phrase}\n### The tone is:\n"


def split(path: Path, n_eval: int) -> tuple[list[dict[str, str]], list[dict[str, str]], list[str]]:
    seen: set[str] = set()
    rows = []
    for line in path.read_text().splitlines():
        row = json.loads(line) if line.strip() else {}
        if not row.get("tone") or PROMPT.format(phrase=row.get("phrase") or "") in seen:
            continue
        seen.add(PROMPT.format(phrase=row.get("phrase") or ""))
        rows.append({"phrase": str(row.get("phrase") or ""), "tone": str(row["tone"])})
    random.Random(0).shuffle(rows)
    train, held_out = rows[n_eval:], rows[:n_eval]
    n_val = min(32, len(train) // 5)
    return train[: len(train) - n_val], held_out, sorted({r["tone"] for r in rows})


def encode(tok: Any, prompt: str, answer: str | None, max_len: int) -> tuple[list[int], int]:
    prompt_ids = list(tok(prompt, add_special_tokens=True)["input_ids"])
    if answer is None:
        return prompt_ids[-max_len:], min(len(prompt_ids), max_len)
    ids = prompt_ids + list(tok(answer, add_special_tokens=False)["input_ids"]) + [tok.eos_token_id]
    cut = max(0, len(ids) - max_len)
    return ids[cut:], len(prompt_ids) - cut


def collate(batch: list[dict[str, list[int]]], pad: int) -> dict[str, Any]:
    import torch

    width = max(len(b["input_ids"]) for b in batch)
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, b in enumerate(batch):
        n = len(b["input_ids"])
        ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(b["input_ids"]), torch.tensor(b["labels"]), 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def train_and_merge(a: argparse.Namespace, train: list[dict[str, str]], merged: Path) -> dict[str, float]:
    began = time.perf_counter()  # like autotune's LoRA pass, this includes importing torch, transformers and peft
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments, set_seed

    set_seed(a.seed)  # before get_peft_model draws the LoRA matrices

    tok = AutoTokenizer.from_pretrained(a.model_path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    base = AutoModelForCausalLM.from_pretrained(a.model_path, dtype=torch.float32, use_safetensors=True)
    model = get_peft_model(base, LoraConfig(r=a.r, lora_alpha=a.alpha, lora_dropout=a.dropout, target_modules=a.targets.split(","),
                                            task_type="CAUSAL_LM", bias="none"))
    features = []
    for row in train:
        ids, n_prompt = encode(tok, PROMPT.format(phrase=row["phrase"]), row["tone"], a.max_len)
        features.append({"input_ids": ids, "labels": [-100] * n_prompt + ids[n_prompt:]})
    args = TrainingArguments(
        output_dir=str(merged.parent / "trainer"), learning_rate=a.lr, max_steps=a.max_steps, per_device_train_batch_size=a.batch_size,
        seed=a.seed, logging_steps=max(1, a.max_steps // 2), optim="adamw_torch", lr_scheduler_type="linear", warmup_steps=0,
        weight_decay=0.0, max_grad_norm=1.0, report_to="none", save_strategy="no", eval_strategy="no", disable_tqdm=True,
        remove_unused_columns=False, use_cpu=True,
    )
    Trainer(model=model, args=args, train_dataset=features, data_collator=lambda b: collate(b, tok.pad_token_id)).train()
    trained = time.perf_counter()
    model.merge_and_unload().save_pretrained(str(merged), safe_serialization=True)
    tok.save_pretrained(str(merged))
    return {"fine_tune": trained - began, "merge": time.perf_counter() - trained}


def build(merged: Path, onnx: Path, block_size: int) -> None:
    from onnxruntime_genai.models import builder

    scratch = onnx.parent / "builder_cache"
    with (onnx.parent / "builder.log").open("w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        extra = builder.parse_extra_options("", str(merged), str(onnx), "int4", "cpu", str(scratch),
                                            [f"block_size={block_size}", "is_symmetric=true"])
        builder.create_model("", str(merged), str(onnx), "int4", "cpu", str(scratch), **extra)


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64) - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def accuracy(onnx: Path, held_out: list[dict[str, str]], labels: list[str], max_len: int) -> float:
    import onnxruntime_genai as og
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(onnx.parent / "merged"))
    model = og.Model(str(onnx))
    label_ids = [list(tok(label, add_special_tokens=False)["input_ids"]) + [tok.eos_token_id] for label in labels]
    correct = 0
    for row in held_out:
        prompt, _ = encode(tok, PROMPT.format(phrase=row["phrase"]), None, max_len)
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(prompt) + max(map(len, label_ids)) + 1, do_sample=False, batch_size=1)
        gen = og.Generator(model, params)
        gen.append_tokens(prompt)
        first = log_softmax(gen.get_output("logits")[0][-1])
        scores = []
        for cont in label_ids:
            score = float(first[cont[0]])
            if len(cont) > 1:
                gen.rewind_to(len(prompt))
                gen.append_tokens(cont[:-1])
                rest = log_softmax(gen.get_output("logits")[0])
                score += sum(float(rest[j, cont[j + 1]]) for j in range(len(cont) - 1))
            scores.append(score)
        correct += labels[int(np.argmax(scores))] == row["tone"]
    return correct / len(held_out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, kind in (("model-path", str), ("data", str), ("work", str), ("targets", str), ("r", int), ("alpha", float),
                       ("dropout", float), ("lr", float), ("max-steps", int), ("batch-size", int), ("seed", int),
                       ("max-len", int), ("eval-size", int), ("block-size", int)):
        p.add_argument(f"--{name}", type=kind, required=True)
    a = p.parse_args()
    began = time.perf_counter()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    train, held_out, labels = split(Path(a.data), a.eval_size)
    seconds = train_and_merge(a, train, work / "merged")
    t = time.perf_counter()
    build(work / "merged", work / "model", a.block_size)
    seconds["build"] = time.perf_counter() - t
    t = time.perf_counter()
    acc = accuracy(work / "model", held_out, labels, a.max_len)
    seconds["evaluation"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - began
    print(json.dumps({"accuracy": acc, "n_eval": len(held_out), "train_rows": len(train), "seconds": seconds}))


if __name__ == "__main__":
    main()
