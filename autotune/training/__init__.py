"""The fine-tune's helpers: transformers' TrainingArguments (``arguments``), the training precision
(``precision``, the one place that decides it; ``precision_probe`` measures it on the CPU) and the rows as
the Trainer reads them (``batches``). The LoRA and QLoRA passes are in :mod:`autotune.passes`."""
