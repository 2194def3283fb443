"""The LoRA pass: every training_args key honoured or refused at validate, targets that match nothing,
mixed precision, the device, what it records, and the 4-bit probe's errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import autotune
from autotune.config_checks import load_config
from autotune.errors import ConfigError
from autotune.passes.lora import LoRAParams, training_argument_values, training_arguments
from tests.conftest import ROOT, skip_or_fail_in_ci, tiny_config


def lora_params(config: dict[str, Any]) -> LoRAParams:
    from autotune.plan import build_plan

    step = build_plan(load_config(config))[0]
    params = step.params({})
    assert isinstance(params, LoRAParams)
    return params


@pytest.mark.parametrize(("key", "value"), [
    ("save_steps", 10), ("save_total_limit", 2), ("load_best_model_at_end", True), ("output_dir", "/tmp/x"),
    ("overwrite_output_dir", True), ("logging_dir", "logs"), ("push_to_hub", True), ("report_to", "wandb"), ("use_cpu", True),
    ("disable_tqdm", False), ("remove_unused_columns", True), ("metric_for_best_model", "loss"), ("resume_from_checkpoint", "x"),
])
def test_a_training_arg_autotune_cannot_honour_is_refused_at_validate(tmp_path: Path, tiny_model: Path, tone_file: Path,
                                                                        key: str, value: Any) -> None:
    config = tiny_config(tiny_model, tone_file, tmp_path)
    config["passes"]["lora"]["training_args"][key] = value
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert info.value.where == f"passes.lora.training_args.{key}"
    assert info.value.message.startswith("cannot be honoured: ") and "\n" not in str(info.value)


def test_every_other_training_arg_reaches_training_arguments(tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    config = tiny_config(tiny_model, tone_file, tmp_path)
    config["passes"]["lora"]["training_args"].update({
        "evaluation_strategy": "steps", "eval_steps": 3, "group_by_length": True, "adam_beta2": 0.98, "warmup_steps": 1,
        "per_device_eval_batch_size": 4, "report_to": "none", "bf16": True, "label_smoothing_factor": 0.1, "eval_on_start": True,
    })
    params = lora_params(config)
    args = training_arguments(params.training_args, tmp_path / "trainer", learning_rate=params.learning_rate, origin="passes.lora")
    assert (args.eval_strategy, args.eval_steps, args.eval_on_start) == ("steps", 3, True)
    assert args.train_sampling_strategy == "group_by_length"  # transformers 5's spelling of group_by_length
    assert (args.adam_beta2, args.warmup_steps, args.per_device_eval_batch_size, args.label_smoothing_factor) == (0.98, 1, 4, 0.1)
    assert args.bf16 and not args.fp16 and args.use_cpu


def test_the_trainer_evaluates_when_eval_strategy_asks(tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    config = tiny_config(tiny_model, tone_file, tmp_path)
    config["passes"]["lora"]["training_args"].update({"eval_strategy": "steps", "eval_steps": 2})
    del config["passes"]["build"], config["passes"]["merge"]
    autotune.run(config)
    (log,) = Path(config["engine"]["cache_dir"]).glob("models/*/model/training_log.json")  # the one adapter trained
    entry = log.parent
    history = json.loads((entry / "training_log.json").read_text())["history"]
    assert [h["step"] for h in history if "eval_loss" in h] == [2, 4]
    stats = json.loads((entry / "train_stats.json").read_text())
    assert stats["device"] == "cpu" and stats["steps"] == 4 and stats["seconds"] > 0 and stats["precision"] in ("fp32", "bf16")


def test_both_spellings_of_eval_strategy_are_refused(tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    config = tiny_config(tiny_model, tone_file, tmp_path)
    config["passes"]["lora"]["training_args"].update({"evaluation_strategy": "steps", "eval_strategy": "no"})
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert info.value.where == "passes.lora.training_args.evaluation_strategy"


def test_eval_strategy_without_validation_rows_is_refused(tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    config = tiny_config(tiny_model, tone_file, tmp_path)
    config["passes"]["lora"].update({"validation_size": 0})
    config["passes"]["lora"]["training_args"]["eval_strategy"] = "steps"
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert info.value.where == "passes.lora.training_args.eval_strategy"


def test_mixed_precision_follows_transformers_own_arguments_and_the_device(tmp_path: Path, tiny_model: Path, tone_file: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:

    def args(device: str, **training: Any) -> Any:
        config = tiny_config(tiny_model, tone_file, tmp_path)
        config["passes"]["lora"]["training_args"].update(training)
        params = lora_params(config)
        # the values, not TrainingArguments itself: it refuses bf16 on a GPU this machine lacks
        return SimpleNamespace(**training_argument_values(params.training_args, tmp_path / "t", learning_rate=params.learning_rate,
                                                          origin="passes.lora", device=device))

    monkeypatch.setattr("autotune.device.bf16_supported", lambda on: True)
    monkeypatch.setattr("autotune.training.precision.CPU_BF16_BY_DEFAULT", False)
    cpu = args("cpu")
    assert cpu.use_cpu and not cpu.bf16  # the CPU default is fp32 unless measured better
    assert args("cpu", bf16=True).bf16
    cuda = args("cuda")
    assert not cuda.use_cpu and cuda.bf16  # auto: bf16 on a GPU that supports it
    assert not args("cuda", bf16=False).bf16
    monkeypatch.setattr("autotune.device.bf16_supported", lambda on: False)
    assert not args("cuda").bf16
    config = tiny_config(tiny_model, tone_file, tmp_path)
    config["passes"]["lora"]["training_args"].update({"bf16": True, "fp16": True})
    with pytest.raises(ConfigError):
        load_config(config)


def test_a_target_that_matches_no_module_names_the_modules_that_exist(tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    # peft trains o_proj and skips qkv_proj without a word when one of the two matches.
    config = tiny_config(tiny_model, tone_file, tmp_path)
    config["passes"]["lora"]["target_modules"] = ["o_proj", "qkv_proj"]
    with pytest.raises(ConfigError) as info:
        autotune.run(config)
    assert info.value.where == "passes.lora.target_modules"
    assert "'qkv_proj' matches no module" in info.value.message and "q_proj" in info.value.message
    assert "\n" not in str(info.value)


def test_the_seed_config_targets_modules_a_llama_has() -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from autotune.config.loader import read_mapping

    raw = read_mapping(ROOT / "configs" / "seed_olive_shape.yaml")
    targets = raw["passes"]["lora"]["config"]["target_modules"]
    model = LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                         num_key_value_heads=1, vocab_size=32))
    leaves = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert set(targets) <= leaves


def test_the_4bit_probe_keeps_unexpected_library_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        import bitsandbytes as bnb
    except ImportError:  # the [qlora] extra CI installs: a missing one fails the test under CI=true
        skip_or_fail_in_ci("bitsandbytes is not installed (the [qlora] extra)")
    from autotune.passes.qlora import four_bit_support

    def unsupported(*_: Any, **__: Any) -> Any:
        raise NotImplementedError("no 4-bit kernel for this device\nsecond line")

    def broken(*_: Any, **__: Any) -> Any:
        raise TypeError("quantize_4bit() got an unexpected keyword argument 'quant_type'")

    try:
        four_bit_support.cache_clear()
        monkeypatch.setattr(bnb.functional, "quantize_4bit", unsupported)
        reason = four_bit_support("cpu")
        assert reason is not None and "NotImplementedError: no 4-bit kernel" in reason and "\n" not in reason
        four_bit_support.cache_clear()
        monkeypatch.setattr(bnb.functional, "quantize_4bit", broken)
        with pytest.raises(TypeError):
            four_bit_support("cpu")
    finally:
        four_bit_support.cache_clear()



def test_the_qlora_test_fails_instead_of_skipping_under_ci(tmp_path: Path) -> None:
    # A broken bitsandbytes (here: one that does not import) must not let CI pass green by skipping.
    fake = tmp_path / "site" / "bitsandbytes"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('broken on purpose', name='bitsandbytes')\n")
    test = "tests/passes/test_quantization.py::test_qlora_trains_and_merges_into_the_dequantized_base"
    for ci, outcome in (("true", "1 failed"), ("", "1 skipped")):
        env = {**os.environ, "PYTHONPATH": str(fake.parent), "CI": ci}
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", test], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=600)
        assert outcome in done.stdout, done.stdout[-2000:]
