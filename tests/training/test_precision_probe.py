"""The CPU training precision probe (issue 22 item 3): fp32 against bf16 autocast on the tiny model,
bf16 only when faster (a fault-injected clock says which is) and its loss matches; cached per machine
and model; training_args.bf16 forces either without a probe."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

import autotune.training.precision_probe as probe
from autotune.cache import Cache
from autotune.config_checks import load_config
from autotune.pipeline import Pipeline
from autotune.training.precision import (
    LOSS_TOLERANCE,
    ProbeDecision,
    StepProbe,
    cached_decision,
    choose_precision,
    decide,
    probe_file,
)
from tests.conftest import tiny_config
from tests.probe_hooks import ticking


@pytest.fixture(autouse=True)
def probe_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """tests/conftest.py turns the probe off for the suite; these tests are about it."""
    monkeypatch.delenv("AUTOTUNE_PRECISION_PROBE", raising=False)


@pytest.fixture
def bf16_cpu(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """A CPU with bf16 instructions; yields the precisions probed, in order."""
    monkeypatch.setattr("autotune.device.bf16_supported", lambda on: on == "cpu")
    probed: list[str] = []
    real = probe.trainer_probe

    def counting(**kwargs: Any) -> StepProbe:
        probed.append(kwargs["precision"])
        return real(**kwargs)

    monkeypatch.setattr(probe, "trainer_probe", counting)
    yield probed


def pipeline_for(tiny_model: Path, tone_file: Path, tmp_path: Path, **training_args: Any) -> Pipeline:
    config = tiny_config(tiny_model, tone_file, tmp_path)
    config["passes"]["lora"]["training_args"].update(training_args)
    loaded = load_config(config)
    pipeline = Pipeline(loaded, cache=Cache(loaded.engine.cache_dir))
    pipeline._device = "cpu"
    return pipeline


def fp32_key(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> str:
    with monkeypatch.context() as patch:
        patch.setattr("autotune.device.bf16_supported", lambda on: False)
        return pipeline.keys()[0][2]


def test_probe_picks_bf16_when_faster_at_matching_loss_and_caches_it(tmp_path: Path, tiny_model: Path, tone_file: Path,
                                                                      bf16_cpu: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probe, "probe_clock", lambda precision: ticking(1.0 if precision == "fp32" else 0.5))
    pipeline = pipeline_for(tiny_model, tone_file, tmp_path)
    fp32 = fp32_key(pipeline, monkeypatch)
    key = pipeline.keys()[0][2]
    assert bf16_cpu == ["fp32", "bf16"]  # real Trainer steps of the tiny model in each precision
    assert key != fp32  # bf16 trains a different adapter: its own cache key
    [record] = (tmp_path / "cache" / "precision_probe").glob("*.json")
    decision = json.loads(record.read_text())
    assert decision["precision"] == "bf16" and decision["bf16_step_s"] < decision["fp32_step_s"]
    assert decision["bf16_loss"] == pytest.approx(decision["fp32_loss"], rel=LOSS_TOLERANCE)
    # A second run on this machine reads the decision: no second probe, same key.
    again = pipeline_for(tiny_model, tone_file, tmp_path)
    assert again.keys()[0][2] == key and bf16_cpu == ["fp32", "bf16"]
    # The fine-tune trains in bf16 and records the probe's timings.
    again.run()
    stats = json.loads((again.cache.entry(key) / "model" / "train_stats.json").read_text())
    assert stats["precision"] == "bf16" and stats["probe_fp32_step_s"] == decision["fp32_step_s"]


def test_probe_keeps_fp32_when_bf16_is_not_faster(tmp_path: Path, tiny_model: Path, tone_file: Path, bf16_cpu: list[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probe, "probe_clock", lambda precision: ticking(1.0 if precision == "fp32" else 0.95))
    pipeline = pipeline_for(tiny_model, tone_file, tmp_path)
    assert pipeline.keys()[0][2] == fp32_key(pipeline, monkeypatch)
    assert bf16_cpu == ["fp32", "bf16"]
    [record] = (tmp_path / "cache" / "precision_probe").glob("*.json")
    assert json.loads(record.read_text())["precision"] == "fp32"


def test_probe_keeps_fp32_when_the_bf16_loss_diverges(tmp_path: Path, tiny_model: Path, tone_file: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("autotune.device.bf16_supported", lambda on: on == "cpu")
    monkeypatch.setattr(probe, "trainer_probe", lambda **kw: StepProbe(seconds=1.0 if kw["precision"] == "fp32" else 0.5,
                                                                              loss=2.0 if kw["precision"] == "fp32" else 2.5))
    pipeline = pipeline_for(tiny_model, tone_file, tmp_path)
    assert pipeline.keys()[0][2] == fp32_key(pipeline, monkeypatch)


def test_decide_takes_bf16_only_when_faster_by_the_margin_and_matching() -> None:
    fp32 = StepProbe(seconds=1.0, loss=3.0)
    assert decide(fp32, StepProbe(seconds=0.5, loss=3.01)).precision == "bf16"
    assert decide(fp32, StepProbe(seconds=0.95, loss=3.0)).precision == "fp32"
    assert decide(fp32, StepProbe(seconds=0.5, loss=3.5)).precision == "fp32"


@pytest.mark.parametrize("forced", [True, False])
def test_training_args_bf16_forces_the_precision_without_a_probe(tmp_path: Path, tiny_model: Path, tone_file: Path, forced: bool,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("autotune.device.bf16_supported", lambda on: on == "cpu")

    def no_probe(**_: Any) -> StepProbe:
        raise AssertionError("a forced precision must not be probed")

    monkeypatch.setattr(probe, "trainer_probe", no_probe)
    pipeline = pipeline_for(tiny_model, tone_file, tmp_path, bf16=forced)
    # The key is the one a CPU without bf16 gives for the same settings: nothing measured entered it.
    assert pipeline.keys()[0][2] == fp32_key(pipeline, monkeypatch)
    assert not (tmp_path / "cache" / "precision_probe").exists()


def test_no_probe_on_a_cpu_without_bf16(tmp_path: Path, tiny_model: Path, tone_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("autotune.device.bf16_supported", lambda on: False)
    monkeypatch.setattr(probe, "trainer_probe", lambda **_: pytest.fail("probed on a CPU without bf16"))
    pipeline_for(tiny_model, tone_file, tmp_path).keys()
    assert not (tmp_path / "cache" / "precision_probe").exists()


def test_the_bf16_probe_really_autocasts_after_an_fp32_probe(tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    # A bf16 Trainer over a model an fp32 Trainer already trained does not autocast (bench/README.md
    # section 6): each side needs its own model, or "bf16" measures fp32 again.
    pipeline = pipeline_for(tiny_model, tone_file, tmp_path)
    step, params, _ = pipeline.keys()[0]
    data = pipeline.data(step.data_name)

    def measure(precision: Any) -> StepProbe:
        return probe.trainer_probe(model_path=tiny_model, params=params, data=data, trust_remote_code=False,
                                   work_dir=tmp_path / precision, precision=precision)

    fp32, fp32_again, bf16 = measure("fp32"), measure("fp32"), measure("bf16")
    assert fp32.loss == fp32_again.loss  # same seed, rows and precision: the same loss
    assert bf16.loss != fp32.loss  # bf16 numerics, not a repeat of fp32
    assert bf16.loss == pytest.approx(fp32.loss, rel=LOSS_TOLERANCE)


def test_the_first_stored_decision_wins_over_a_probe_that_read_otherwise(tmp_path: Path) -> None:
    """Two workers probing at once under different load: the one that stores second takes the first's decision
    (one point, one cache key), whatever its own steps read."""
    first = ProbeDecision("bf16", 1.0, 0.5, 2.0, 2.0, "bf16 faster")

    def measure(precision: str) -> StepProbe:
        path = probe_file(tmp_path, "shape")
        if precision == "bf16" and not path.exists():  # another worker finishes first, while this one probes
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(asdict(first)))
        return StepProbe(seconds=1.0 if precision == "fp32" else 0.99, loss=2.0)  # this one reads fp32

    assert choose_precision(cache_root=tmp_path, shape_key="shape", measure=measure) == first
    assert cached_decision(probe_file(tmp_path, "shape")) == first
    assert [p.name for p in (tmp_path / "precision_probe").iterdir()] == [probe_file(tmp_path, "shape").name]


def test_one_decision_serves_every_lora_shape_of_a_model(tmp_path: Path, tiny_model: Path, tone_file: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("autotune.device.bf16_supported", lambda on: on == "cpu")
    probed: list[str] = []

    def fake(**kwargs: Any) -> StepProbe:
        probed.append(kwargs["precision"])
        return StepProbe(seconds=1.0 if kwargs["precision"] == "fp32" else 0.5, loss=2.0)

    monkeypatch.setattr(probe, "trainer_probe", fake)
    for r, targets in ((4, ["q_proj", "v_proj"]), (8, ["q_proj", "k_proj", "v_proj", "o_proj"])):
        config = tiny_config(tiny_model, tone_file, tmp_path)
        config["passes"]["lora"].update(r=r, target_modules=targets)
        loaded = load_config(config)
        pipeline = Pipeline(loaded, cache=Cache(loaded.engine.cache_dir))
        pipeline._device = "cpu"
        pipeline.keys()
    assert probed == ["fp32", "bf16"]  # probed once, for both shapes
    assert len(list((tmp_path / "cache" / "precision_probe").glob("*.json"))) == 1


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_training_args_precision_forces_one_without_a_probe(tmp_path: Path, tiny_model: Path, tone_file: Path, precision: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("autotune.device.bf16_supported", lambda on: on == "cpu")
    monkeypatch.setattr(probe, "trainer_probe", lambda **_: pytest.fail("a forced precision must not be probed"))
    forced = pipeline_for(tiny_model, tone_file, tmp_path, precision=precision).keys()[0][2]
    assert forced == pipeline_for(tiny_model, tone_file, tmp_path, bf16=precision == "bf16").keys()[0][2]
    assert not (tmp_path / "cache" / "precision_probe").exists()


def test_training_args_precision_auto_is_the_default_and_a_clash_is_refused(tmp_path: Path, tiny_model: Path, tone_file: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from autotune.errors import ConfigError

    monkeypatch.setattr("autotune.device.bf16_supported", lambda on: False)
    assert pipeline_for(tiny_model, tone_file, tmp_path, precision="auto").keys()[0][2] == pipeline_for(tiny_model, tone_file,
                                                                                                      tmp_path).keys()[0][2]
    with pytest.raises(ConfigError, match=r"passes\.lora\.training_args: precision and bf16 are both set"):
        pipeline_for(tiny_model, tone_file, tmp_path, precision="fp32", bf16=True)
    with pytest.raises(ConfigError, match=r"training_args: precision: expected one of auto, fp32, bf16, fp16, got .fp8."):
        pipeline_for(tiny_model, tone_file, tmp_path, precision="fp8")


class StoreInMemory:
    """A study's decisions (autotune.records.StudyPrecision's get/claim) in a dict."""

    def __init__(self, held: dict[str, Any] | None = None) -> None:
        self.held = dict(held or {})

    def get(self, key: str) -> dict[str, Any] | None:
        return self.held.get(key)

    def claim(self, key: str, decision: dict[str, Any]) -> dict[str, Any]:
        return self.held.setdefault(key, decision)


def test_the_studys_decision_wins_over_this_machines_cache_and_probe(tmp_path: Path) -> None:
    studys = ProbeDecision("bf16", 1.0, 0.5, 2.0, 2.0, "bf16 faster on the first worker")
    path = probe_file(tmp_path, "shape")
    store = StoreInMemory({path.stem: asdict(studys)})
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(asdict(ProbeDecision("fp32", 1.0, 0.99, 2.0, 2.0, "this machine, loaded"))))
    measured: list[str] = []
    chosen = choose_precision(cache_root=tmp_path, shape_key="shape", shared=store,
                                    measure=lambda p: StepProbe(1.0, 2.0) if measured.append(p) is None else None)
    assert chosen == studys and not measured
    # A study without one takes this machine's (probed here) and keeps it for every other worker.
    empty = StoreInMemory()
    chosen = choose_precision(cache_root=tmp_path / "other", shape_key="shape", shared=empty,
                                    measure=lambda p: StepProbe(1.0 if p == "fp32" else 0.5, 2.0))
    assert chosen.precision == "bf16" and empty.held == {probe_file(tmp_path, "shape").stem: asdict(chosen)}
