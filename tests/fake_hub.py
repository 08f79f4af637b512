"""A fake Hugging Face Hub on 127.0.0.1, answering what ``hf_hub_download`` (huggingface_hub 2.4)
asks when it downloads one file, as the real hub answers it for an LFS file:

* ``HEAD /{repo_id}/resolve/{revision}/{filename}`` gets ``302 Found`` with ``X-Repo-Commit``,
  ``X-Linked-Etag`` (the file's sha256, quoted), ``X-Linked-Size`` and ``Location``, a URL on a
  second server standing in for the CDN (another origin, so huggingface_hub stops at the
  redirect, reads the metadata from it and drops the token before following it);
* ``GET {cdn}/cdn/{sha256}`` gets the bytes.

huggingface_hub also asks ``GET {its import-time ENDPOINT}/api/agent-harnesses`` once a process
(to name an AI agent in its user agent); that gets an empty registry.

Errors carry the hub's ``X-Error-Code``: ``RepoNotFound`` (401), ``GatedRepo`` (401 without the
right ``Authorization: Bearer`` token), ``RevisionNotFound`` and ``EntryNotFound`` (404).
Every request is recorded, so a test can assert how many were made and where the token went.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import unquote

from tests.local_http import serving

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    authorization: str | None


@dataclass
class FakeHub:
    """The files, gates and request log of one fake hub; ``url`` is its endpoint (HF_ENDPOINT)."""

    url: str = ""
    cdn_url: str = ""
    files: dict[tuple[str, str], bytes] = field(default_factory=dict)
    advertised: dict[tuple[str, str], str] = field(default_factory=dict)  # a sha256 other than the real one
    gates: dict[str, str] = field(default_factory=dict)  # repo_id -> the token that opens it
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, repo_id: str, filename: str, content: bytes, *, advertise_sha256: str | None = None) -> str:
        """Hold ``content`` as ``filename`` of ``repo_id``; returns its sha256. ``advertise_sha256``
        is what the hub claims instead (a checksum failure)."""
        self.files[(repo_id, filename)] = content
        if advertise_sha256 is not None:
            self.advertised[(repo_id, filename)] = advertise_sha256
        return hashlib.sha256(content).hexdigest()

    def gate(self, repo_id: str, token: str) -> None:
        """Answer 401 GatedRepo for ``repo_id`` unless the request carries ``token``."""
        self.gates[repo_id] = token

    def count(self, method: str | None = None, *, under: str = "/") -> int:
        """How many requests (of ``method``, to paths starting with ``under``) were made."""
        with self.lock:
            return sum(1 for r in self.requests if method in (None, r.method) and r.path.startswith(under))


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _answer(self, *, body: bool) -> None:
        hub, path = self.hub, unquote(self.path.split("?", 1)[0])
        with hub.lock:
            hub.requests.append(Request(self.command, path, self.headers.get("Authorization")))
        if path == "/api/agent-harnesses":
            registry = json.dumps({"standardEnvVars": [], "harnesses": {}}).encode()
            return self._send(200, {"Content-Type": "application/json"}, registry, body)
        if path.startswith("/cdn/"):
            content = next((c for c in hub.files.values() if hashlib.sha256(c).hexdigest() == path[5:]), None)
            if content is None:
                return self._send(404, {}, b"", body)
            return self._send(200, {"Content-Length": str(len(content))}, content, body)
        owner, name, resolve, revision, filename = ([*path.lstrip("/").split("/", 4), "", "", "", ""])[:5]
        repo_id = f"{owner}/{name}"
        if resolve != "resolve" or not any(repo == repo_id for repo, _ in hub.files):
            return self._error(401, "RepoNotFound", body)
        token = hub.gates.get(repo_id)
        if token is not None and self.headers.get("Authorization") != f"Bearer {token}":
            return self._error(401, "GatedRepo", body)
        if revision not in ("main", COMMIT):
            return self._error(404, "RevisionNotFound", body)
        content = hub.files.get((repo_id, filename))
        if content is None:
            return self._error(404, "EntryNotFound", body, {"X-Repo-Commit": COMMIT})
        sha256 = hashlib.sha256(content).hexdigest()
        headers = {
            "X-Repo-Commit": COMMIT,
            "X-Linked-Etag": f'"{hub.advertised.get((repo_id, filename), sha256)}"',
            "X-Linked-Size": str(len(content)),
            "ETag": '"0000000000000000000000000000000000000000"',  # the LFS pointer's git sha
            "Location": f"{hub.cdn_url}/cdn/{sha256}",
            "Content-Length": "0",
        }
        self._send(302, headers, b"", body)

    def _error(self, status: int, code: str, body: bool, extra: dict[str, str] | None = None) -> None:
        message = f"{code} for {self.path}".encode()
        headers = {"X-Error-Code": code, "Content-Length": str(len(message)), **(extra or {})}
        self._send(status, headers, message, body)

    def _send(self, status: int, headers: dict[str, str], content: bytes, body: bool) -> None:
        self.send_response(status)
        for key, value in {"Content-Length": str(len(content)), **headers}.items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(content)


@contextmanager
def fake_hub() -> Iterator[FakeHub]:
    """A fake hub and its CDN, served for the ``with`` block."""
    hub = FakeHub()
    handler = type("HubHandler", (_Handler,), {"hub": hub})
    with ExitStack() as stack:
        hub.url = stack.enter_context(serving(handler))
        hub.cdn_url = stack.enter_context(serving(handler))
        yield hub
