"""``hf:`` model specs: parsing, and downloads from a fake Hub on 127.0.0.1 (tests/fake_hub.py)
through the real huggingface_hub, into a cache under tmp_path."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tierflow.agents.hub import HubSpec, hub_model_file, parse_hub_spec
from tierflow.errors import ConfigError, ModelFileError, ModelNotFoundError, ModelPullError
from tierflow.records import Progress

from tests.fake_hub import FakeHub, fake_hub

REPO = "acme/tiny-GGUF"
FILE = "tiny-q4_k_m.gguf"
GGUF = b"GGUF" + bytes(range(256)) * 40
SPEC = HubSpec(REPO, FILE)
TOKEN = "hf_secretTokenForTests123"


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A clean Hugging Face environment: HF_HOME under tmp_path, no token, online."""
    for name in (
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "3")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    return tmp_path / "hf" / "hub"


@pytest.fixture
def hub(cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with fake_hub() as served:
        monkeypatch.setenv("HF_ENDPOINT", served.url)
        yield served


def cached_files(cache: Path) -> list[Path]:
    """The blobs and snapshot entries of the cache (not its refs or locks)."""
    return [p for p in cache.rglob("*") if {"blobs", "snapshots"} & set(p.parts) and not p.is_dir()]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("hf:acme/tiny-GGUF/tiny.gguf", HubSpec("acme/tiny-GGUF", "tiny.gguf")),
        ("hf:acme/tiny-GGUF/q4/tiny.Q4_K_M.gguf", HubSpec("acme/tiny-GGUF", "q4/tiny.Q4_K_M.gguf")),
        ("hf:acme/tiny-GGUF/tiny.gguf@v1.0", HubSpec("acme/tiny-GGUF", "tiny.gguf", "v1.0")),
        ("hf:acme/tiny-GGUF/tiny.gguf@refs/pr/3", HubSpec("acme/tiny-GGUF", "tiny.gguf", "refs/pr/3")),
        ("hf:acme/tiny-GGUF/my@home.gguf", HubSpec("acme/tiny-GGUF", "my@home.gguf")),
        ("models/tiny.gguf", None),
        ("qwen2.5-1.5b", None),
    ],
)
def test_parse_hub_spec(spec: str, expected: HubSpec | None) -> None:
    assert parse_hub_spec(spec) == expected
    if expected is not None:
        assert str(expected) == spec


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("hf:acme/tiny-GGUF", "does not name a .gguf file"),
        ("hf:acme/tiny-GGUF/tiny.safetensors", "does not name a .gguf file"),
        ("hf:tiny.gguf", "names no repository"),
        ("hf:acme/tiny.gguf", "names no repository"),
        ("hf:acme corp/tiny-GGUF/tiny.gguf", "is not a repository id"),
        ("hf:acme/tiny-GGUF/../tiny.gguf", "'..' part"),
        ("hf:acme/tiny-GGUF//tiny.gguf", "empty"),
        ("hf:acme/tiny-GGUF/tiny.gguf@", "revision"),
        ("hf:acme/tiny-GGUF/tiny.gguf@a b", "revision"),
    ],
)
def test_malformed_hub_spec(spec: str, why: str) -> None:
    with pytest.raises(ConfigError, match="malformed") as caught:
        parse_hub_spec(spec)
    assert why in caught.value.message
    assert "hf:OWNER" not in caught.value.message and "hf:Qwen/" in caught.value.hint


def test_download_verifies_and_caches(hub: FakeHub, cache: Path) -> None:
    sha256 = hub.add(REPO, f"q4/{FILE}", GGUF)
    reports: list[Progress] = []
    path = hub_model_file(HubSpec(REPO, f"q4/{FILE}"), on_progress=reports.append)
    assert path.is_relative_to(cache) and path.name == FILE and path.read_bytes() == GGUF
    assert path.resolve().name == sha256
    assert path.resolve().with_name(sha256 + ".sha256").read_text().strip() == sha256
    downloaded = [r for r in reports if r.stage.startswith("downloading")]
    assert downloaded[-1] == Progress(f"downloading hf:{REPO}/q4/{FILE}", len(GGUF), len(GGUF), unit="bytes")
    assert any(r.stage.startswith("verifying") and r.done == len(GGUF) for r in reports)
    assert hub.count("GET", under="/cdn/") == 1
    assert all(r.authorization is None for r in hub.requests)

    reports.clear()
    assert hub_model_file(HubSpec(REPO, f"q4/{FILE}"), on_progress=reports.append) == path
    assert hub.count("GET", under="/cdn/") == 1  # the second call only asks the hub for the file's metadata
    assert reports == []  # the stamp spares the hashing


def test_hf_hub_cache_is_honoured(hub: FakeHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    hub.add(REPO, FILE, GGUF)
    assert hub_model_file(SPEC).is_relative_to(tmp_path / "elsewhere")


def test_offline_uses_the_cache_without_requests(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.add(REPO, FILE, GGUF)
    path = hub_model_file(SPEC)
    before = hub.count()
    assert hub_model_file(SPEC, offline=True) == path
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_model_file(SPEC) == path
    assert hub.count() == before


def test_offline_without_the_file_says_how_to_get_it(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.add(REPO, FILE, GGUF)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="offline mode is on") as caught:
        hub_model_file(SPEC)
    assert f"tierflow models pull hf:{REPO}/{FILE}" in caught.value.hint
    assert "HF_HUB_OFFLINE" in caught.value.hint
    assert hub.count() == 0


def test_a_cached_file_changed_since_verified_is_rehashed_and_rejected(hub: FakeHub, cache: Path) -> None:
    hub.add(REPO, FILE, GGUF)
    blob = hub_model_file(SPEC).resolve()
    time.sleep(0.01)
    blob.write_bytes(b"GGUF" + b"\0" * 100)  # newer than its stamp
    with pytest.raises(ModelPullError, match="sha256"):
        hub_model_file(SPEC, offline=True)
    assert cached_files(cache) == []


def test_wrong_checksum_deletes_the_download(hub: FakeHub, cache: Path) -> None:
    sha256 = hub.add(REPO, FILE, GGUF, advertise_sha256="ab" * 32)
    with pytest.raises(ModelPullError) as caught:
        hub_model_file(SPEC)
    message = caught.value.message
    assert REPO in message and FILE in message and sha256 in message and "ab" * 32 in message
    assert "tierflow models pull" in caught.value.hint
    assert cached_files(cache) == []


def test_gated_repo_needs_the_token(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.add(REPO, FILE, GGUF)
    hub.gate(REPO, TOKEN)
    with pytest.raises(ModelPullError, match="refused access") as caught:
        hub_model_file(SPEC)
    assert "HF_TOKEN" in caught.value.hint

    monkeypatch.setenv("HF_TOKEN", "hf_notTheRightOne456")
    with pytest.raises(ModelPullError) as caught:
        hub_model_file(SPEC)
    assert "hf_notTheRightOne456" not in str(caught.value) and "hf_notTheRightOne456" not in repr(
        caught.value
    )

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert hub_model_file(SPEC).read_bytes() == GGUF
    cdn = [r for r in hub.requests if r.path.startswith("/cdn/")]
    assert cdn and all(r.authorization is None for r in cdn)  # the token never leaves the hub


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        (HubSpec("acme/nothing-here", FILE), "no repository acme/nothing-here"),
        (HubSpec(REPO, "other.gguf"), "has no file other.gguf"),
        (HubSpec(REPO, FILE, "v9"), "has no revision 'v9'"),
    ],
)
def test_missing_repo_file_or_revision(hub: FakeHub, spec: HubSpec, says: str) -> None:
    hub.add(REPO, FILE, GGUF)
    with pytest.raises(ModelNotFoundError, match=says) as caught:
        hub_model_file(spec)
    assert caught.value.hint


def test_a_file_that_is_not_gguf_is_rejected(hub: FakeHub) -> None:
    hub.add(REPO, FILE, b"PK\x03\x04" + bytes(100))
    with pytest.raises(ModelFileError, match="not a GGUF model file"):
        hub_model_file(SPEC)


def closed_port() -> int:
    """A port of 127.0.0.1 that nothing listens on: connections to it are refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_unreachable_hub_fails_fast(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = closed_port()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    start = time.monotonic()
    with pytest.raises(ModelPullError, match=f"cannot reach http://127.0.0.1:{port}") as caught:
        hub_model_file(SPEC)
    assert time.monotonic() - start < 5
    assert "HF_ENDPOINT" in caught.value.hint


def test_unreachable_hub_falls_back_to_the_cache(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.add(REPO, FILE, GGUF)
    path = hub_model_file(SPEC)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    assert hub_model_file(SPEC) == path


def test_missing_huggingface_hub_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ConfigError, match="needs huggingface_hub"):
        hub_model_file(SPEC)


def test_importing_the_module_leaves_huggingface_hub_unimported() -> None:
    code = "import sys, tierflow.agents.hub; assert 'huggingface_hub' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


def test_a_hub_spec_works_wherever_a_model_is_named(hub: FakeHub, tmp_path: Path) -> None:
    """The SLM setting, the embedded LLM's and `tierflow models pull` take an hf: spec."""
    from tierflow.agents.catalog import resolve_model
    from tierflow.app import slm_name
    from tierflow.cli import app as cli
    from tierflow.settings import Settings
    from typer.testing import CliRunner

    hub.add(REPO, FILE, GGUF)
    spec = f"hf:{REPO}/{FILE}"
    with pytest.raises(ModelNotFoundError, match="is not downloaded"):
        resolve_model(spec, tmp_path / "models", auto_pull=False)  # only the cache, and it is empty
    pulled = CliRunner().invoke(cli, ["models", "pull", spec])
    assert pulled.exit_code == 0, pulled.output
    path = resolve_model(spec, tmp_path / "models", auto_pull=False)  # now it is cached
    assert path.read_bytes() == GGUF and str(path) in pulled.output.replace("\n", "")
    assert slm_name(Settings(slm_model=spec, slm_adapter="none")) == "tiny-q4_k_m"
