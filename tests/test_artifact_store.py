"""The shared artifact store without models: read-through, verification, claims and their expiry, on a
shared folder and on a real S3-compatible server (moto's, on 127.0.0.1, started here)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from autotune.artifacts import ArtifactStore, open_store
from autotune.cache import Cache
from autotune.errors import ConfigError
from tests.conftest import skip_or_fail_in_ci

KEY = "ab" * 32


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 (the `dev` extra installs it); its endpoint URL."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        skip_or_fail_in_ci("moto[s3] is not installed (pip install -e \".[dev]\")")
    fake = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in fake}
    os.environ.update(fake)  # moto accepts any; real credentials are never used here
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
    for k, v in saved.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture(params=["file", "s3"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "file":
        (tmp_path / "store").mkdir()
        return str(tmp_path / "store")
    endpoint = request.getfixturevalue("s3_server")
    try:
        import s3fs
    except ImportError:
        skip_or_fail_in_ci("s3fs is not installed (pip install -e \".[dev]\")")

    bucket = f"b{time.time_ns()}"
    s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True).mkdir(bucket)
    return f"s3://{bucket}/studies/one?endpoint_url={endpoint}"


def fill(cache: Cache, key: str = KEY) -> None:
    with cache.put(key, {"kind": "onnx"}) as out:
        (out / "sub").mkdir()
        (out / "model.onnx").write_bytes(os.urandom(4096))
        (out / "sub" / "config.json").write_text('{"a": 1}')


def test_an_entry_written_on_one_machine_is_read_through_on_another(store_url: str, tmp_path: Path) -> None:
    store = open_store(store_url)
    a, b = Cache(tmp_path / "a", store), Cache(tmp_path / "b", open_store(store_url))
    fill(a)
    assert store.has(KEY) and b.has(KEY) and not (b.entry(KEY) / "manifest.json").exists()
    got = b.get(KEY)  # downloaded, verified, kept
    assert got is not None and (got[0] / "sub" / "config.json").read_text() == '{"a": 1}'
    assert (got[0] / "model.onnx").read_bytes() == (a.entry(KEY) / "model" / "model.onnx").read_bytes()
    assert (b.entry(KEY) / "manifest.json").is_file() and not list((b.tmp).iterdir())
    a.put_json("e" * 64, {"accuracy": 0.5})
    assert b.get_json("e" * 64) == {"accuracy": 0.5} and (b.evals / f"{'e' * 64}.json").is_file()
    assert b.location(KEY).endswith(f"/models/{KEY}") and "?" not in b.location(KEY)
    (got[0] / "model.onnx").write_bytes(b"damaged on this machine")
    again = b.get(KEY)  # a corrupt local copy is replaced by the store's
    assert again is not None and (again[0] / "model.onnx").read_bytes() == (a.entry(KEY) / "model" / "model.onnx").read_bytes()


def test_a_corrupt_store_entry_is_refused_and_hidden_for_the_rebuild(store_url: str, tmp_path: Path) -> None:
    store = open_store(store_url)
    fill(Cache(tmp_path / "a", store))
    store._write(f"models/{KEY}/model/model.onnx", b"not the bytes the manifest names")
    assert Cache(tmp_path / "b", store).get(KEY) is None  # never handed out unverified
    assert not store.has(KEY)  # its manifest is gone: the next builder uploads a good copy
    fill(Cache(tmp_path / "c", store))
    assert Cache(tmp_path / "d", store).get(KEY) is not None


def test_a_claim_is_exclusive_and_released(store_url: str, tmp_path: Path) -> None:
    store = open_store(store_url)
    first = store.claim(KEY, 0, heartbeat=0.2)
    assert first is not None and store.claim(KEY, 0, heartbeat=0.2) is None
    holder = store.holder(KEY)
    assert holder is not None and json.loads(holder[1])["pid"] == os.getpid()
    deadline = time.monotonic() + 30  # a 0.2 s heartbeat, on a machine that may be busy
    while store.holder(KEY) == holder and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.holder(KEY) != holder  # the heartbeat rewrote it
    first.release()
    assert store.holder(KEY) is None and store.claim(KEY, 0, heartbeat=0.2) is not None


HOLDER = textwrap.dedent("""
    import sys, time
    from autotune.artifacts import open_store
    from autotune.cache import Cache
    store = open_store(sys.argv[1])
    claim = store.claim(sys.argv[2], 0, heartbeat=0.2)
    print("claimed", flush=True)
    time.sleep(float(sys.argv[3]))
    cache = Cache(__import__("pathlib").Path(sys.argv[4]), store)
    with cache.put(sys.argv[2], {}) as out:
        (out / "w.bin").write_bytes(b"built by the holder")
    claim.release()
    time.sleep(100)
""")


def holder_process(store_url: str, key: str, build_after: float, cache: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, store_url, key, str(build_after), str(cache)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "claimed"
    return proc


def test_a_waiter_gets_the_holders_entry_or_takes_over_a_dead_holders_claim(store_url: str, tmp_path: Path) -> None:
    live = holder_process(store_url, KEY, 1.5, tmp_path / "holder")  # alive: heartbeats, then builds
    try:
        cache = Cache(tmp_path / "waiter", open_store(store_url), heartbeat=0.2)
        with cache.claim(KEY) as build_here:
            assert build_here is False  # it waited for the live holder's entry instead of building
        assert cache.get(KEY) is not None and (cache.get(KEY)[0] / "w.bin").read_bytes() == b"built by the holder"
    finally:
        live.kill()
        live.wait()
    dead = holder_process(store_url, "cd" * 32, 100, tmp_path / "holder")
    os.kill(dead.pid, signal.SIGKILL)  # dies holding the claim: no heartbeat from now on
    dead.wait()
    began = time.monotonic()
    with cache.claim("cd" * 32) as build_here:
        assert build_here is True  # taken over once the heartbeat had been still for 3 x 0.2 s
        fill(cache, "cd" * 32)
    assert time.monotonic() - began < 30
    assert open_store(store_url).holder("cd" * 32) is None  # the new claim and the expired one are gone


def test_without_a_store_every_worker_builds_as_before(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    with cache.claim(KEY) as build_here:
        assert build_here is True
    assert cache.location(KEY) == str(tmp_path / "models" / KEY)


@pytest.mark.parametrize(("url", "says"), [
    ("relative/store", "absolute path"),
    ("ftp://host/x", "unsupported scheme"),
    ("s3://", "needs a bucket"),
    ("s3://key:secret@bucket/p", "credentials do not belong in the URL"),
    ("s3://bucket/p?endpoint=http://x", "unknown S3 option"),
])
def test_a_bad_store_url_is_one_line_naming_the_key(url: str, says: str, tmp_path: Path) -> None:
    from autotune.config_checks import load_config

    model = tmp_path / "m"
    model.mkdir()
    raw = {"input_model": {"type": "HfModel", "model_path": str(model)}, "engine": {"artifact_store": url}}
    with pytest.raises(ConfigError) as info:
        load_config(raw, base_dir=tmp_path)
    assert "engine.artifact_store" in str(info.value) and says in str(info.value) and "\n" not in str(info.value)
    assert "secret" not in str(info.value)


def test_an_unmounted_store_folder_is_one_line_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"engine.artifact_store.*no such folder"):
        open_store(str(tmp_path / "not-mounted"))


def test_an_unreachable_s3_store_is_one_line_naming_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        import s3fs  # noqa: F401
    except ImportError:
        skip_or_fail_in_ci("s3fs is not installed (pip install -e \".[dev]\")")
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's retries would only make the refusal slower
    with pytest.raises(ConfigError, match=r"engine.artifact_store.*cannot reach s3://bucket"):
        open_store(f"s3://bucket/p?endpoint_url=http://127.0.0.1:{port}")


def test_store_layout_is_plain_files(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    store = open_store(f"file://{tmp_path / 'store'}")
    assert isinstance(store, ArtifactStore) and store.local
    fill(Cache(tmp_path / "a", store))
    manifest = json.loads((tmp_path / "store" / "models" / KEY / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.onnx", "sub/config.json"}
    assert not [p for p in (tmp_path / "store").rglob("*") if ".tmp-" in p.name]  # no temporary left behind


def test_the_run_context_builds_the_cache_over_the_configured_store(store_url: str, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from autotune.config_checks import load_config
    from autotune.run_context import RunContext

    (tmp_path / "m").mkdir()
    raw = {"input_model": {"type": "HfModel", "model_path": str(tmp_path / "m")},
           "engine": {"artifact_store": store_url, "cache_dir": str(tmp_path / "cache"), "heartbeat_seconds": 2}}
    ctx = RunContext(load_config(raw, base_dir=tmp_path))
    assert ctx.cache.store is not None and ctx.cache.store.local == store_url.startswith("/") and ctx.cache.heartbeat == 2
    fill(ctx.cache)
    monkeypatch.setenv("AUTOTUNE_CACHE_DIR", str(tmp_path / "elsewhere"))  # another machine's own cache folder
    other = RunContext(load_config(raw, base_dir=tmp_path))
    assert other.cache.root == tmp_path / "elsewhere" and other.cache.get(KEY) is not None
