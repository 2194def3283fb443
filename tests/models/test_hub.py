"""Hugging Face model ids (``org/name``) resolved from a Hugging Face cache, offline, as a user runs them.

The cache is laid out exactly as ``huggingface_hub`` lays it out (``models--org--name/{blobs,refs,snapshots}``,
snapshot files symlinked to blobs), built from the tiny model, and ``huggingface_hub.scan_cache_dir`` must
read it back. The one download path (online, id absent) runs against a stand-in for
``snapshot_download``: no network in tests.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from autotune.cache import Cache
from autotune.config_checks import load_config
from autotune.errors import ConfigError, ModelError
from autotune.models.fetch import DEMO_MODELS
from autotune.models.hub import USER_OFFLINE_MARK
from autotune.models.source import known_model_id, locate_input_model, resolve_input_model
from tests.conftest import tiny_config

REPO = "org/tiny-llama"
MAIN = "a" * 40
V2 = "b" * 40


def add_snapshot(cache: Path, repo_id: str, source: Path, *, commit: str, refs: list[str]) -> Path:
    """``source``'s files as ``huggingface_hub`` caches one revision: blobs by digest, snapshot symlinks, refs."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for file in sorted(source.iterdir()):
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir(exist_ok=True)
    for ref in refs:
        (repo / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture()
def hf_cache(tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HF_HUB_CACHE with org/tiny-llama at two commits (main, and tag v2 with the same files), offline."""
    from huggingface_hub import scan_cache_dir

    cache = tmp_path / "hf" / "hub"
    add_snapshot(cache, REPO, tiny_model, commit=MAIN, refs=["main"])
    add_snapshot(cache, REPO, tiny_model, commit=V2, refs=["v2"])
    scanned = scan_cache_dir(cache)
    assert not scanned.warnings
    assert {(r.repo_id, rev.commit_hash, tuple(sorted(rev.refs))) for r in scanned.repos for rev in r.revisions} == {
        (REPO, MAIN, ("main",)), (REPO, V2, ("v2",))}
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv(USER_OFFLINE_MARK, "1")
    return cache


def hub_config(root: Path, data: Path, model_path: str, **input_model: Any) -> dict[str, Any]:
    """A one-pass single run (fp32 build, no evaluator) over ``model_path``."""
    config = tiny_config(Path(model_path), data, root)
    config["input_model"] = {"type": "HfModel", "model_path": model_path, **input_model}
    config["passes"] = {"build": {"type": "ModelBuilder", "precision": "fp32"}}
    config["data_configs"][0]["eval_dataset_size"] = 100  # no small-split warning: stderr holds only what is asserted
    return config


def cli(*args: str, cache: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "400", "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    env.pop(USER_OFFLINE_MARK, None)  # the command records the user's choice itself
    return subprocess.run([sys.executable, "-m", "autotune.cli", *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=600)


def test_a_hub_id_validates_and_runs_offline_from_the_cache(hf_cache: Path, tmp_path: Path, tone_file: Path) -> None:
    config = hub_config(tmp_path, tone_file, REPO)
    path = tmp_path / "hub.json"
    path.write_text(json.dumps(config))
    proc = cli("validate", "--config", str(path), cache=hf_cache, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "valid" in proc.stdout
    proc = cli("run", "--config", str(path), cache=hf_cache, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert MAIN in proc.stdout + proc.stderr  # the resolved commit is said
    card = json.loads((tmp_path / "out" / "best" / "model_card.json").read_text())
    assert card["base_model"] == REPO
    assert (tmp_path / "out" / "best" / "README.md").read_text().startswith(f"---\nbase_model: {REPO}\n")


def test_a_revision_resolves_to_its_snapshot_and_the_commit_enters_the_key(hf_cache: Path, tmp_path: Path,
                                                                           tone_file: Path) -> None:
    cache = Cache(tmp_path / "cache")
    handles = {}
    for revision in ("main", "v2", V2):
        config = load_config(hub_config(tmp_path, tone_file, REPO, revision=revision), base_dir=tmp_path)
        handles[revision] = resolve_input_model(config, cache)
    snapshots = hf_cache / "models--org--tiny-llama" / "snapshots"
    assert handles["main"].path == snapshots / MAIN
    assert handles["v2"].path == handles[V2].path == snapshots / V2
    # The same files at two commits: two models (a new revision is a new model), one per commit.
    assert handles["main"].key != handles["v2"].key == handles[V2].key


def test_an_olive_revision_key_is_applied(hf_cache: Path, tmp_path: Path, tone_file: Path) -> None:
    config = hub_config(tmp_path, tone_file, REPO)
    config["input_model"] = {"type": "HfModel", "config": {"model_path": REPO, "model_loading_args": {"revision": "v2"}}}
    source = locate_input_model(load_config(config, base_dir=tmp_path).input_model)
    assert source.hub is not None and source.hub.commit == V2


def test_a_revision_of_a_local_folder_is_refused(tmp_path: Path, tiny_model: Path, tone_file: Path) -> None:
    # Refused as the config is read (validate's checks locate the model), or at the latest when it is located.
    with pytest.raises(ConfigError, match=r"^input_model.revision: applies to a Hugging Face model id"):
        config = load_config(hub_config(tmp_path, tone_file, str(tiny_model), revision="v2"), base_dir=tmp_path)
        locate_input_model(config.input_model)


@pytest.mark.parametrize(("model_path", "revision", "shown"), [
    ("org/absent", None, "'org/absent'"),
    (REPO, "no-such-tag", f"'{REPO} (revision no-such-tag)'"),
], ids=["absent-id", "absent-revision"])
def test_an_absent_id_offline_is_one_line_and_writes_nothing(hf_cache: Path, tmp_path: Path, tone_file: Path,
                                                             model_path: str, revision: str | None, shown: str) -> None:
    config = hub_config(tmp_path, tone_file, model_path, **({"revision": revision} if revision else {}))
    path = tmp_path / "absent.json"
    path.write_text(json.dumps(config))
    for command in ("validate", "run"):
        proc = cli(command, "--config", str(path), cache=hf_cache, cwd=tmp_path)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stdout + proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert lines[0].startswith(f"error: input_model.model_path: {shown} is neither a local folder nor in the "
                                   f"Hugging Face cache ({hf_cache}) and HF_HUB_OFFLINE=1")
        assert f"hf download {model_path}" in lines[0]
        assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_online_and_absent_downloads_config_tokenizer_and_safetensors_only(hf_cache: Path, tmp_path: Path, tiny_model: Path,
                                                                           tone_file: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError

    calls: list[dict[str, Any]] = []

    def fake_snapshot_download(repo_id: str, **kwargs: Any) -> str:
        if kwargs.get("local_files_only"):
            raise LocalEntryNotFoundError("not cached")
        calls.append({**kwargs, "offline_during_call": constants.HF_HUB_OFFLINE})
        return str(add_snapshot(Path(kwargs["cache_dir"]), repo_id, tiny_model, commit="c" * 40, refs=[kwargs["revision"]]))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what go_offline leaves for the libraries
    monkeypatch.setenv(USER_OFFLINE_MARK, "0")  # the user did not ask for offline
    config = load_config(hub_config(tmp_path, tone_file, "org/fresh"), base_dir=tmp_path)
    handle = resolve_input_model(config, Cache(tmp_path / "cache"))
    assert handle.path == hf_cache / "models--org--fresh" / "snapshots" / ("c" * 40)
    [call] = calls
    assert call["revision"] == "main" and Path(call["cache_dir"]) == hf_cache
    assert call["offline_during_call"] is False and constants.HF_HUB_OFFLINE is True  # lifted for the call only
    allowed = call["allow_patterns"]

    def fetched(name: str) -> bool:
        return any(fnmatch.fnmatch(name, p) for p in allowed) and not any(fnmatch.fnmatch(name, p) for p in call["ignore_patterns"])

    for name in ("config.json", "model.safetensors", "model-00001-of-00002.safetensors", "model.safetensors.index.json",
                 "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
        assert fetched(name), name
    for name in ("pytorch_model.bin", "model.pt", "original/consolidated.00.pth", "onnx/model.safetensors", "modeling_x.py"):
        assert not fetched(name), name


def test_the_demo_id_prefers_the_users_hf_cache_copy_else_the_wheel(hf_cache: Path, tmp_path: Path, tiny_model: Path,
                                                                    tone_file: Path) -> None:
    demo = DEMO_MODELS["smollm2-135m"]
    spec = load_config(hub_config(tmp_path, tone_file, demo.hub_id), base_dir=tmp_path).input_model
    from_wheel = locate_input_model(spec)
    assert from_wheel.demo == demo and from_wheel.hub is None and from_wheel.model_id == demo.hub_id
    snapshot = add_snapshot(hf_cache, demo.hub_id, tiny_model, commit="d" * 40, refs=["main"])
    from_cache = locate_input_model(spec)
    assert from_cache.demo is None and from_cache.folder == snapshot and from_cache.model_id == demo.hub_id


def write_gguf(path: Path, **strings: str) -> Path:
    """A GGUF file with ``strings`` as metadata and no tensors (what the readers here look at)."""
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "llama")
    for key, value in strings.items():
        writer.add_string(key, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_gguf_file_in_a_hub_repository_resolves_to_that_file(hf_cache: Path, tmp_path: Path, tone_file: Path) -> None:
    files = tmp_path / "gguf-repo"
    files.mkdir()
    write_gguf(files / "m.Q4_0.gguf")
    snapshot = add_snapshot(hf_cache, "org/gguf-repo", files, commit="e" * 40, refs=["main"])
    raw = hub_config(tmp_path, tone_file, "org/gguf-repo/m.Q4_0.gguf")  # split into model_path + gguf_file
    source = locate_input_model(load_config(raw, base_dir=tmp_path).input_model)
    assert source.gguf == snapshot / "m.Q4_0.gguf" and source.model_id == "org/gguf-repo"
    raw["input_model"]["model_path"] = "org/gguf-repo/other.gguf"  # a file that snapshot lacks: absent, offline
    with pytest.raises(ModelError, match=r"'org/gguf-repo' is neither a local folder nor in the Hugging Face cache"):
        locate_input_model(load_config(raw, base_dir=tmp_path).input_model)


def test_base_model_is_a_known_id_and_never_a_local_path(tmp_path: Path, tiny_model: Path) -> None:
    assert known_model_id({"model_path": REPO, "revision": "v2"}) == REPO
    assert known_model_id({"model_path": "smollm2-135m"}) == DEMO_MODELS["smollm2-135m"].hub_id
    assert known_model_id({"model_path": str(tiny_model)}) is None  # a plain local folder: no id, no path
    folder = tmp_path / "named"
    folder.mkdir()
    for name_or_path, expected in [("org/named-model", "org/named-model"), (str(tiny_model), None), ("./named", None)]:
        config = json.loads((tiny_model / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "_name_or_path": name_or_path}))
        assert known_model_id({"model_path": str(folder)}) == expected, name_or_path
    for key, value, expected in [("general.source.huggingface.repository", "org/gguf-model", "org/gguf-model"),
                                 ("general.source.url", "https://huggingface.co/org/from-url", "org/from-url"),
                                 ("general.source.url", "/home/me/models/x", None),
                                 ("general.basename", "smollm2", None)]:
        write_gguf(tmp_path / "m.gguf", **{key: value})
        assert known_model_id({"model_path": str(tmp_path), "gguf_file": "m.gguf"}) == expected, (key, value)


def test_a_missing_relative_path_that_is_no_id_stays_a_path_error(tmp_path: Path, tone_file: Path) -> None:
    config = load_config(hub_config(tmp_path, tone_file, "models/tiny/llama"), base_dir=tmp_path)
    assert Path(str(config.input_model.model_path)).is_absolute()
    with pytest.raises(ModelError, match="no such file or folder"):
        from autotune.models.source import check_input_model

        check_input_model(config)

