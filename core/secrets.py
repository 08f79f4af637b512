"""Secrets never reach a trace, a checkpoint, a log, an export or the screen.

Two kinds are scrubbed to ``[REDACTED]``:

* **known values**: the LLM API key, passwords inside the LLM endpoint's and the database's
  URLs, and the values of environment variables named like secrets (``*_API_KEY``,
  ``*_TOKEN``, ``*_SECRET``, ``*_PASSWORD``), registered when the settings load;
* **shapes** of common credentials wherever they appear (a key typed into a task, quoted by
  an endpoint's error): OpenAI-style ``sk-…`` keys, bearer tokens, GitHub, Slack and AWS
  access keys, the password of any ``scheme://user:password@host`` URL, a value a label
  calls secret (``password: …``, ``api_key=…``, ``token = …``), and a spoken password
  with a digit in it (``password hunter2``, ``my PIN is 4417``).

``scrub`` is what every store and printer calls; ``install_log_scrubbing`` makes every log
record (tierflow's, httpx's, openai's) pass through it.

>>> register(["hunter2-very-secret"])
>>> scrub("key hunter2-very-secret and sk-abcdefghijklmnopqrstuv, https://me:pw@host/v1")
'key [REDACTED] and [REDACTED], https://me:[REDACTED]@host/v1'
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from tierflow.json_values import map_json

__all__ = ["REDACTED", "register", "scrub", "scrub_value", "secret_env_values", "install_log_scrubbing"]

REDACTED = "[REDACTED]"
_MIN_LENGTH = 6  # shorter values would scrub ordinary words

_SHAPES = re.compile(
    r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{16,}"  # OpenAI, Anthropic
    r"|\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})"  # GitHub
    r"|\bxox[abposr]-[A-Za-z0-9-]{10,}"  # Slack
    r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"  # AWS access key ids
    r"|\bhf_[A-Za-z0-9]{30,}"  # Hugging Face
    r"|(?<=Bearer )[A-Za-z0-9._~+/-]{16,}=*",  # Authorization headers
)
_URL_PASSWORD = re.compile(r"(?<=://)([^/\s:@]+):([^/\s@]+)@")
_LABELLED = re.compile(  # a value a label calls secret: "password: x", "api_key=x", "token = x"
    r"(?i)\b((?:password|passwd|passphrase|pwd|secret|api[_ -]?key|access[_ -]?key|auth[_ -]?token|token)"
    r"\s*[:=]\s*)([^\s\"',;]+)"
)
_SPOKEN_PASSWORD = re.compile(  # "password hunter2", "my password is hunter2": a value with a digit
    r"(?i)\b((?:password|passwd|passphrase|pin)\s+(?:is\s+|was\s+)?)(?=[^\s\"',;]*\d)([^\s\"',;.]+)"
)
_SECRET_ENV = re.compile(r"(API_?KEY|TOKEN|SECRET|PASSWORD|PASSWD)$", re.IGNORECASE)

_known: set[str] = set()
_lock = threading.Lock()
_pattern: re.Pattern[str] | None = None


def register(values: Iterable[str]) -> None:
    """Add secret values (the settings' key and passwords); short or empty ones are ignored."""
    global _pattern
    with _lock:
        added = {value for value in values if value and len(value) >= _MIN_LENGTH} - _known
        if added:
            _known.update(added)
            ordered = sorted(_known, key=len, reverse=True)  # a longer secret before its prefix
            _pattern = re.compile("|".join(re.escape(value) for value in ordered))


def secret_env_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of environment variables whose names say they hold a secret."""
    source = os.environ if environ is None else environ
    return [value for name, value in source.items() if _SECRET_ENV.search(name) and value]


def url_password(url: str | None) -> str | None:
    match = _URL_PASSWORD.search(url or "")
    return match.group(2) if match else None


def scrub(text: str) -> str:
    """``text`` with every known secret and credential shape replaced by ``[REDACTED]``."""
    if not text:
        return text
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    text = _SHAPES.sub(REDACTED, text)
    text = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}:{REDACTED}@", text)
    text = _LABELLED.sub(lambda m: m.group(1) + REDACTED, text)
    return _SPOKEN_PASSWORD.sub(lambda m: m.group(1) + REDACTED, text)


def scrub_value(value: Any) -> Any:
    """``scrub`` applied to every string inside dicts, lists and tuples (keys included)."""
    return map_json(value, lambda leaf: scrub(leaf) if isinstance(leaf, str) else leaf, keys=True)


_installed = False


def install_log_scrubbing() -> None:
    """Every log record from now on is scrubbed before any handler formats it."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is left to logging to report
            return record
        cleaned = scrub(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        return record

    logging.setLogRecordFactory(factory)
