"""GGUF models from the Hugging Face Hub, named ``hf:OWNER/REPO/FILE.gguf[@REVISION]``.

``huggingface_hub`` downloads the file into its usual cache (``HF_HOME`` or ``HF_HUB_CACHE``)
from ``HF_ENDPOINT``; for gated and private repositories it sends ``HF_TOKEN`` (or the token of
``hf auth login``). For an LFS file
the hub's ETag is the file's sha256: the download is hashed and compared with it, and a copy
that does not match is deleted. A ``<blob>.sha256`` stamp beside the verified blob spares the
next call the hashing. Offline (``HF_HUB_OFFLINE=1``) only the cache is used, as it is when the
hub cannot be reached and the file was downloaded before.

huggingface_hub reads its variables once, when it is imported; this module reads the ones it
needs again at each call (they are huggingface_hub's own settings, not tierflow's), so a
variable set after that import still counts.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tierflow.errors import ConfigError, ModelFileError, ModelNotFoundError, ModelPullError, TierflowError
from tierflow.optional import require
from tierflow.records import OnProgress, Progress

__all__ = ["HubSpec", "parse_hub_spec", "hub_model_file"]

_PREFIX = "hf:"
_EXAMPLE = "hf:Qwen/Qwen2.5-1.5B-Instruct-GGUF/qwen2.5-1.5b-instruct-q4_k_m.gguf"
_REPO_PART = re.compile(r"[\w.-]+")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_GGUF_MAGIC = b"GGUF"
_BLOCK = 4 << 20
_TRUE = {"1", "ON", "YES", "TRUE"}


@dataclass(frozen=True)
class HubSpec:
    """One file of a model repository on the Hub: ``hf:{repo_id}/{filename}[@{revision}]``."""

    repo_id: str
    filename: str  # may contain folders: "sub/model.gguf"
    revision: str | None = None  # a branch, tag or commit; None is "main"

    def __str__(self) -> str:
        return f"{_PREFIX}{self.repo_id}/{self.filename}" + (f"@{self.revision}" if self.revision else "")


def parse_hub_spec(spec: str) -> HubSpec | None:
    """The file ``spec`` names, or ``None`` when it does not start with ``hf:``.

    Raises ``ConfigError`` for an ``hf:`` spec that is not ``hf:OWNER/REPO/FILE.gguf[@REVISION]``."""
    if not spec.startswith(_PREFIX):
        return None
    match = re.fullmatch(r"(.+?\.gguf)(?:@(.*))?", spec[len(_PREFIX) :], re.IGNORECASE | re.DOTALL)
    if match is None:
        raise _malformed(spec, "it does not name a .gguf file")
    path, revision = match[1], match[2]
    parts = path.split("/")
    if len(parts) < 3:
        raise _malformed(spec, "it names no repository (OWNER/REPO) before the file")
    if not all(_REPO_PART.fullmatch(part) for part in parts[:2]):
        raise _malformed(spec, f"{'/'.join(parts[:2])!r} is not a repository id")
    if any(part in ("", ".", "..") or part != part.strip() or "\\" in part for part in parts[2:]):
        raise _malformed(spec, f"the file path {'/'.join(parts[2:])!r} has an empty, '.' or '..' part")
    if revision is not None and not re.fullmatch(r"[^\s@]+", revision):
        raise _malformed(spec, f"the revision after '@' ({revision!r}) is empty or has spaces")
    return HubSpec("/".join(parts[:2]), "/".join(parts[2:]), revision)


def hub_model_file(
    spec: HubSpec, *, on_progress: OnProgress | None = None, offline: bool | None = None
) -> Path:
    """The local path of ``spec``'s GGUF file: downloaded into the Hugging Face cache unless it is
    there already, and verified. ``offline`` (default: ``HF_HUB_OFFLINE``) uses the cache only and
    makes no request. ``on_progress`` receives the bytes downloaded and hashed; without it
    huggingface_hub shows its own progress bars (``HF_HUB_DISABLE_PROGRESS_BARS=1`` hides them).

    Raises ``ModelNotFoundError`` (no such repository, revision or file; not cached when offline),
    ``ModelPullError`` (hub unreachable, access refused, checksum mismatch), ``ModelFileError``
    (not a GGUF file) and ``ConfigError`` (huggingface_hub is not installed)."""
    require("huggingface_hub", purpose=f"Downloading {spec}")
    import httpx2
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError, OfflineModeIsEnabled

    env = _hub_env(os.environ)
    if offline or (offline is None and (env.offline or constants.is_offline_mode())):
        cached = _cached_path(spec, env)
        if cached is None:
            raise ModelNotFoundError(
                f"{spec} is not in the Hugging Face cache ({env.cache_dir}) and offline mode is on",
                hint=f"Download it once online (`tierflow models pull {spec}`), or unset HF_HUB_OFFLINE.",
            )
        return _verified(spec, cached, None, on_progress)
    try:
        url = hf_hub_url(spec.repo_id, spec.filename, revision=spec.revision, endpoint=env.endpoint)
        metadata = get_hf_file_metadata(url, timeout=env.etag_timeout, endpoint=env.endpoint)
        path = hf_hub_download(
            spec.repo_id,
            spec.filename,
            revision=spec.revision,
            cache_dir=env.cache_dir,
            endpoint=env.endpoint,
            etag_timeout=env.etag_timeout,
            tqdm_class=_reporting_bar(f"downloading {spec}", on_progress) if on_progress else None,
        )
    except HFValidationError as exc:
        raise ConfigError(f"{spec}: {exc}", hint=f"Write the spec as {_EXAMPLE}.") from exc
    except (OSError, httpx2.HTTPError) as exc:
        unreachable = isinstance(exc, httpx2.TransportError | OfflineModeIsEnabled | LocalEntryNotFoundError)
        cached = _cached_path(spec, env) if unreachable else None
        if cached is not None:  # as huggingface_hub does: the copy downloaded before
            return _verified(spec, cached, None, on_progress)
        raise _failure(spec, env, exc, unreachable) from exc
    return _verified(spec, Path(path), metadata.etag, on_progress)


@dataclass(frozen=True)
class _HubEnv:
    endpoint: str
    cache_dir: Path
    offline: bool
    etag_timeout: float


def _hub_env(environ: Mapping[str, str]) -> _HubEnv:
    """huggingface_hub's settings as the environment has them now, with its defaults."""
    home = environ.get("HF_HOME") or os.path.join(environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    cache = environ.get("HF_HUB_CACHE") or environ.get("HUGGINGFACE_HUB_CACHE") or os.path.join(home, "hub")
    timeout = environ.get("HF_HUB_ETAG_TIMEOUT", "")
    return _HubEnv(
        endpoint=(environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/"),
        cache_dir=Path(os.path.expandvars(cache)).expanduser(),
        offline=any(
            environ.get(name, "").upper() in _TRUE for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
        ),
        etag_timeout=float(timeout) if timeout.replace(".", "", 1).isdigit() else 10.0,
    )


def _cached_path(spec: HubSpec, env: _HubEnv) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(
        spec.repo_id, spec.filename, cache_dir=env.cache_dir, revision=spec.revision
    )
    return Path(found) if isinstance(found, str) else None


def _verified(spec: HubSpec, path: Path, expected: str | None, on_progress: OnProgress | None) -> Path:
    """``path`` once its content has the hub's sha256 (``expected``, else its blob's name when that
    is one) and starts as a GGUF file does. A mismatch deletes the file and raises."""
    blob = path.resolve()
    stamp = blob.with_name(blob.name + ".sha256")
    if expected is None or not _SHA256.fullmatch(expected):
        expected = blob.name if _SHA256.fullmatch(blob.name) else None
    if not _stamp_holds(stamp, blob, expected):
        digest = _sha256(blob, f"verifying {spec}", on_progress)
        if expected is not None and digest != expected:
            for bad in (path, blob, stamp):
                bad.unlink(missing_ok=True)
            raise ModelPullError(
                f"{spec}: the file's sha256 is {digest} but the hub gave {expected}; the copy was deleted",
                hint=f"Download it again (`tierflow models pull {spec}`); if it fails again, something "
                "between you and the hub (HF_ENDPOINT, a proxy) alters the file.",
            )
        stamp.write_text(digest + "\n")
    with blob.open("rb") as handle:
        magic = handle.read(len(_GGUF_MAGIC))
    if magic != _GGUF_MAGIC:
        raise ModelFileError(
            f"{spec} is not a GGUF model file (it starts with {magic!r})",
            hint="The repository's file is not a llama.cpp model: choose another of its .gguf files.",
        )
    return path


def _stamp_holds(stamp: Path, blob: Path, expected: str | None) -> bool:
    """True when a stamp written after the blob records the digest expected (any, if none is)."""
    try:
        recorded = stamp.read_text().strip()
        newer = stamp.stat().st_mtime_ns >= blob.stat().st_mtime_ns
    except OSError:
        return False
    return newer and _SHA256.fullmatch(recorded) is not None and recorded == (expected or recorded)


def _sha256(path: Path, stage: str, on_progress: OnProgress | None) -> str:
    digest, done, total = hashlib.sha256(), 0, path.stat().st_size
    with path.open("rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
            done += len(block)
            if on_progress:
                on_progress(Progress(stage, done, total, unit="bytes"))
    return digest.hexdigest()


def _failure(spec: HubSpec, env: _HubEnv, exc: Exception, unreachable: bool) -> TierflowError:
    """The error to raise for what huggingface_hub raised; it never holds the token."""
    from huggingface_hub import errors as hub_errors

    page = f"{env.endpoint}/{spec.repo_id}"
    status = exc.response.status_code if isinstance(exc, hub_errors.HfHubHTTPError) else None
    if isinstance(exc, hub_errors.GatedRepoError) or (
        status in (401, 403) and not isinstance(exc, hub_errors.RepositoryNotFoundError)
    ):
        return ModelPullError(
            f"{spec}: the hub refused access to {spec.repo_id} (HTTP {status}; gated or private)",
            hint=f"Accept the model's terms at {page} with your account, then set HF_TOKEN to a read "
            "token of that account (https://huggingface.co/settings/tokens).",
        )
    if isinstance(exc, hub_errors.RepositoryNotFoundError):
        return ModelNotFoundError(
            f"{spec}: there is no repository {spec.repo_id} on {env.endpoint}",
            hint="Check OWNER/REPO in the spec; a private repository also needs HF_TOKEN.",
        )
    if isinstance(exc, hub_errors.RevisionNotFoundError):
        return ModelNotFoundError(
            f"{spec}: {spec.repo_id} has no revision {spec.revision or 'main'!r}",
            hint="Check the branch, tag or commit after '@', or leave it out to use main.",
        )
    if isinstance(exc, hub_errors.RemoteEntryNotFoundError):
        return ModelNotFoundError(
            f"{spec}: {spec.repo_id} has no file {spec.filename}",
            hint=f"Copy the name of one of its .gguf files from {page}/tree/{spec.revision or 'main'}.",
        )
    if unreachable:
        return ModelPullError(
            f"{spec}: cannot reach {env.endpoint} ({type(exc).__name__}) and the file is not cached",
            hint="Check the network and HF_ENDPOINT; HF_HUB_ETAG_TIMEOUT sets how long to wait.",
        )
    return ModelPullError(
        f"{spec}: the download failed: {exc}",
        hint="Run it again; huggingface_hub keeps no partial file in its cache.",
    )


def _reporting_bar(stage: str, on_progress: OnProgress) -> type[Any]:
    """A silent tqdm class for huggingface_hub that reports the bytes written to ``on_progress``."""
    from tqdm import tqdm

    class ReportingBar(tqdm):  # type: ignore[misc]  # tqdm has no type hints
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **{**kwargs, "disable": True})
            self.written = int(kwargs.get("initial") or 0)

        def update(self, n: float | None = 1) -> None:
            self.written += int(n or 0)
            on_progress(Progress(stage, self.written, int(self.total or 0), unit="bytes"))

        def update_transfer(self, n: float | None = 1) -> None:
            """Network bytes (Xet downloads): the bytes written are what is reported."""

    return ReportingBar


def _malformed(spec: str, why: str) -> ConfigError:
    return ConfigError(f"model spec {spec!r} is malformed: {why}", hint=f"Write it as {_EXAMPLE}[@REVISION].")
