"""The whole pipeline on the tiny model: fine-tune -> merge -> ONNX build, and the shared-prefix cache."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import autotune
from autotune.cache import Cache
from tests.conftest import generate_one, tiny_config


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, tone_rows: list[dict[str, str]]) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pipeline")
    data = root / "tones.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in tone_rows[:200]) + "\n")
    return {"root": root, "model": tiny_model, "data": data}


def ran(result: autotune.StudyResult) -> dict[str, bool]:
    """pass name -> whether it ran (True) or came from the cache (False)."""
    return {p.name: not p.cache_hit for p in result.record.passes}


def test_single_run_builds_a_folder_genai_loads_and_generates_from(work: dict[str, Path]) -> None:

    config = tiny_config(work["model"], work["data"], work["root"])
    result = autotune.run(config)
    assert ran(result) == {"lora": True, "merge": True, "build": True}
    out = work["root"] / "out"
    model_dir = out / "model"
    assert (model_dir / "genai_config.json").is_file() and (model_dir / "model.onnx").is_file()
    record = json.loads((out / "run.json").read_text())
    assert [p["type"] for p in record["passes"]] == ["LoRA", "MergeAdapterWeights", "ModelBuilder"]
    assert all(p["seconds"] > 0 for p in record["passes"])

    assert len(generate_one(model_dir, "### Text: what a lovely day\n### The tone is:\n")) == 1


def test_identical_rerun_reuses_every_pass(work: dict[str, Path]) -> None:
    config = tiny_config(work["model"], work["data"], work["root"])
    first = autotune.run(config)
    (work["root"] / "out" / "study.db").unlink()  # no stored result to keep: the passes run, from the cache
    second = autotune.run(config)
    assert ran(second) == {"lora": False, "merge": False, "build": False}
    assert second.record.model_key == first.record.model_key
    third = autotune.run(config)  # nothing changed: the stored result stands as it is (issue 22 item 4)
    assert third.record.model_dump() == second.record.model_dump()


def test_changing_only_precision_reruns_only_the_build(work: dict[str, Path]) -> None:
    config = tiny_config(work["model"], work["data"], work["root"])
    autotune.run(config)
    config["passes"]["build"]["precision"] = "fp32"
    result = autotune.run(config)
    assert ran(result) == {"lora": False, "merge": False, "build": True}


def test_changing_training_reruns_everything_after_it(work: dict[str, Path]) -> None:
    config = tiny_config(work["model"], work["data"], work["root"])
    autotune.run(config)
    config["passes"]["lora"]["r"] = 2
    result = autotune.run(config)
    assert ran(result) == {"lora": True, "merge": True, "build": True}


def test_training_honours_max_steps_and_masks_the_prompt(work: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoTokenizer, Trainer

    batches: list[dict[str, Any]] = []
    real_compute_loss = Trainer.compute_loss

    def recording(self: Trainer, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        batches.append({k: v.detach().cpu().clone() for k, v in inputs.items()})  # the batch the model trains on
        return real_compute_loss(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(Trainer, "compute_loss", recording)
    config = tiny_config(work["model"], work["data"], work["root"])
    config["passes"]["lora"]["training_args"]["max_steps"] = 3
    result = autotune.run(config)
    lora = next(p for p in result.record.passes if p.name == "lora")
    log = json.loads((Path(config["engine"]["cache_dir"]) / "models" / lora.key / "model" / "training_log.json").read_text())
    assert log["steps"] == 3 and len(batches) == 3
    tokenizer = AutoTokenizer.from_pretrained(work["model"])
    tones = {"joy", "surprise", "fear", "sadness"}
    rows = 0
    for batch in batches:
        for ids, labels, mask in zip(batch["input_ids"].tolist(), batch["labels"].tolist(), batch["attention_mask"].tolist(),
                                     strict=True):
            length = sum(mask)
            assert mask == [1] * length + [0] * (len(mask) - length)  # padding only at the end
            assert all(label == -100 for label in labels[length:])  # no loss on padding
            start = next(i for i, label in enumerate(labels) if label != -100)
            assert all(label != -100 for label in labels[start:length])  # the answer is one span that ends the row
            assert labels[start:length] == ids[start:length]
            prompt, answer = tokenizer.decode(ids[:start]), tokenizer.decode(ids[start:length])
            # Everything up to the answer is masked: the whole templated prompt, and nothing of the answer.
            assert prompt.startswith("### Text: ") and prompt.endswith("### The tone is:\n"), prompt
            assert answer.removesuffix(tokenizer.eos_token) in tones, answer
            rows += 1
    assert rows == 3 * 8  # per_device_train_batch_size 8


def test_a_corrupt_cache_entry_is_discarded_and_rebuilt(work: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    config = tiny_config(work["model"], work["data"], work["root"])
    config["passes"]["build"]["precision"] = "int8"
    first = autotune.run(config)
    build_key = first.record.passes[-1].key
    onnx_data = Path(config["engine"]["cache_dir"]) / "models" / build_key / "model" / "model.onnx.data"
    with onnx_data.open("r+b") as handle:  # cut the file, as a crash mid-write would
        handle.truncate(onnx_data.stat().st_size // 2)
    second = autotune.run(config)
    assert ran(second) == {"lora": False, "merge": False, "build": True}
    assert any("corrupt" in r.message for r in caplog.records)


def test_a_failed_pass_leaves_no_cache_entry(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    with pytest.raises(RuntimeError), cache.put("k" * 64, {"pass": "X"}) as folder:
        (folder / "half.bin").write_bytes(b"x" * 10)
        raise RuntimeError("killed")
    assert not cache.has("k" * 64)
    assert cache.get("k" * 64) is None
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []


def test_two_writers_of_one_entry_one_wins_and_the_other_reuses(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    key = "a" * 64
    with cache.put(key, {"writer": 1}) as first:
        (first / "w.txt").write_text("first")
        with cache.put(key, {"writer": 2}) as second:  # finishes first: it wins
            (second / "w.txt").write_text("second")
    got = cache.get(key)
    assert got is not None
    assert (got[0] / "w.txt").read_text() == "second"
    assert got[1]["writer"] == 2


def test_seed_shaped_config_runs_unchanged(work: dict[str, Path]) -> None:
    seed = {
        "input_model": {"type": "PyTorchModel", "config": {"hf_config": {
            "model_name": str(work["model"]), "task": "text-generation", "model_loading_args": {"trust_remote_code": False}}}},
        "data_configs": [{
            "name": "dataset_default_train", "type": "HuggingfaceContainer",
            "load_dataset_config": {"params": {"data_name": "json", "data_files": str(work["data"]), "split": "train"}},
            "pre_process_data_config": {"params": {
                "dataset_type": "corpus", "text_cols": ["phrase", "tone"], "text_template": "### Text: {phrase}\n### The tone is:\n{tone}",
                "corpus_strategy": "line-by-line", "source_max_len": 1024, "pad_to_max_len": False, "use_attention_mask": False}},
        }],
        "passes": {
            "lora": {"type": "LoRA", "config": {
                "target_modules": ["o_proj", "q_proj"], "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.1,
                "train_data_config": "dataset_default_train", "eval_dataset_size": 0.3,
                "training_args": {"seed": 0, "data_seed": 42, "per_device_train_batch_size": 8, "gradient_accumulation_steps": 1,
                                  "gradient_checkpointing": False, "learning_rate": 1e-4, "num_train_epochs": 3, "max_steps": 2,
                                  "logging_steps": 1, "evaluation_strategy": "steps", "eval_steps": 187, "group_by_length": True,
                                  "adam_beta2": 0.999, "max_grad_norm": 0.3}}},
            "merge": {"type": "MergeAdapterWeights"},
            "builder": {"type": "ModelBuilder", "config": {"precision": "int4"}},
        },
        "engine": {"log_severity_level": 0, "search_strategy": False, "execution_providers": ["CPUExecutionProvider"],
                   "cache_dir": str(work["root"] / "cache"), "output_dir": str(work["root"] / "seed-out")},
    }
    result = autotune.run(seed)
    assert (work["root"] / "seed-out" / "model" / "genai_config.json").is_file()
    assert result.record.params[result.record.passes[0].name]["r"] == 4


def test_generate_streams_an_answer_from_the_built_folder(work: dict[str, Path]) -> None:
    from typer.testing import CliRunner

    from autotune.cli import app

    config = tiny_config(work["model"], work["data"], work["root"])
    autotune.run(config)
    model_dir = work["root"] / "out" / "model"
    result = CliRunner().invoke(app, ["generate", "--model", str(model_dir), "--max-new-tokens", "4",
                                      "--template", "### Text: {phrase}\n### The tone is:\n{tone}", "what a day"])
    assert result.exit_code == 0, result.output
    assert result.output.strip()
    missing = CliRunner().invoke(app, ["generate", "--model", str(work["root"]), "hi"])
    assert missing.exit_code == 2 and "genai_config.json" in missing.output


def test_one_config_twice_trains_the_same_adapter_and_builds_the_same_model(work: dict[str, Path], tmp_path: Path) -> None:
    # each run with its own empty cache: both really train (the seed must cover the adapter's init)
    weights = []
    for name in ("first", "second"):
        result = autotune.run(tiny_config(work["model"], work["data"], tmp_path / name))
        assert ran(result) == {"lora": True, "merge": True, "build": True}
        cache = Cache(tmp_path / name / "cache")
        adapter, build = (cache.get(p.key)[0] for p in result.record.passes if p.name in ("lora", "build"))
        weights.append(((adapter / "adapter_model.safetensors").read_bytes(), (build / "model.onnx.data").read_bytes()))
    assert weights[0] == weights[1]


def test_an_entry_is_hashed_once_when_written_and_not_again_when_read_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from autotune import fileio

    hashed: list[str] = []
    real = fileio.file_sha256
    monkeypatch.setattr(fileio, "file_sha256", lambda path, *a: hashed.append(path.name) or real(path, *a))
    cache = Cache(tmp_path)
    with cache.put("f" * 64, {}) as folder:
        (folder / "weights.bin").write_bytes(b"w" * 4096)
    assert hashed == ["weights.bin"]
    assert cache.get("f" * 64) is not None and Cache(tmp_path).get("f" * 64) is not None  # this process and a new one
    assert hashed == ["weights.bin"]
    (cache.entry("f" * 64) / "model" / "weights.bin").write_bytes(b"x" * 4096)  # changed behind the cache's back
    assert cache.get("f" * 64) is None  # rehashed (the mtime moved), found corrupt, discarded
    assert not any(path.startswith(str(cache.entry("f" * 64).resolve())) for path in cache.hasher.memo)


def test_the_run_folder_links_the_weights_and_copies_what_users_edit(work: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from autotune import fileio

    monkeypatch.setattr(fileio, "LINK_MIN_BYTES", 100_000)  # the tiny model's weights are 215 kB; genai_config.json is small
    config = tiny_config(work["model"], work["data"], work["root"])
    result = autotune.run(config)
    entry = Cache(work["root"] / "cache").get(result.record.model_key)[0]
    out = work["root"] / "out" / "model"
    assert (out / "model.onnx.data").stat().st_ino == (entry / "model.onnx.data").stat().st_ino  # no second copy
    (out / "genai_config.json").write_text("{}")  # a user's edit stays in the run folder
    assert json.loads((entry / "genai_config.json").read_text())["model"]
