"""What a pass leaves behind is garbage before the next pass starts: the models, the Trainer and the
builder's model are freed between passes, not kept resident under the next pass's own peak."""

from __future__ import annotations

import gc
import json
import weakref
from pathlib import Path
from typing import Any

import pytest

import autotune
import autotune.pipeline
from tests.conftest import tiny_config


def test_models_and_trainer_of_a_pass_are_freed_before_the_next_pass_starts(
        tmp_path: Path, tiny_model: Path, tone_rows: list[dict[str, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers
    from transformers import AutoModelForCausalLM

    data = tmp_path / "tones.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in tone_rows[:64]) + "\n")
    made: list[tuple[str, weakref.ref[Any]]] = []  # (what, reference) of each big object, in order

    load = AutoModelForCausalLM.from_pretrained  # the LoRA base and the merge base (the builder's is in its own process)

    def recorded_load(*args: Any, **kwargs: Any) -> Any:
        model = load(*args, **kwargs)
        made.append(("model", weakref.ref(model)))
        return model

    class RecordedTrainer(transformers.Trainer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(("trainer", weakref.ref(self)))

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", recorded_load)
    monkeypatch.setattr(transformers, "Trainer", RecordedTrainer)

    # What is alive when each pass starts: everything an earlier pass made must be gone by then.
    alive_at_start: list[tuple[str, list[str]]] = []
    build = autotune.pipeline.Pipeline._build

    def recorded_build(self: Any, step: Any, *args: Any, **kwargs: Any) -> None:
        alive_at_start.append((step.name, [what for what, ref in made if ref() is not None]))
        build(self, step, *args, **kwargs)

    monkeypatch.setattr(autotune.pipeline.Pipeline, "_build", recorded_build)
    # With the automatic collector off, only what the pipeline itself does can free the cycles that
    # hold a trained model (the Trainer's callbacks, peft's wrappers): the test cannot pass by luck.
    gc.disable()
    try:
        result = autotune.run(tiny_config(tiny_model, data, tmp_path))
        alive_at_end = [what for what, ref in made if ref() is not None]
    finally:
        gc.enable()

    assert [p.name for p in result.record.passes if not p.cache_hit] == ["lora", "merge", "build"]
    assert [what for what, _ in made] == ["model", "trainer", "model"]  # LoRA, merge
    assert alive_at_start == [("lora", []), ("merge", []), ("build", [])]
    assert alive_at_end == []
