"""The SLM's LoRA adapters: trained by ``tierflow learn``, promoted only on evidence.

Each adapter lives in its own folder of ``<data dir>/adapters/``: the GGUF LoRA file that
llama.cpp loads (``lora_path``) and a card of what it was trained on and how it measured
against the base SLM on verified decisions it never saw::

    adapters/
      lora-20261204-093000/adapter.gguf
      lora-20261204-093000/card.json
      active.json          # {"active": "lora-20261204-093000", "history": [...]}

The SLM tier loads the active adapter when its base model is the configured SLM, and its
calls carry the adapter in the model name (``qwen2.5-coder-0.5b+lora-20261204-093000``).
A new name means a new model pair, so escalation scorers calibrated on the base SLM are not
used silently for the adapted one (refit them with ``tierflow calibrate --from-runs``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tierflow.errors import ConfigError, TaskInputError

__all__ = [
    "AdapterCard",
    "AdapterStore",
    "Comparison",
    "adapted_name",
    "ADAPTER_FILE",
    "now_name",
]

ADAPTER_FILE = "adapter.gguf"
_CARD = "card.json"
_ACTIVE = "active.json"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def adapted_name(base: str, adapter: str | None) -> str:
    """The SLM's name in traces and scorer matching: the base model, plus the adapter."""
    return f"{base}+{adapter}" if adapter else base


@dataclass(frozen=True)
class Comparison:
    """Base SLM and SLM + adapter on the held-out verified decisions, side by side."""

    items: int
    base_right: int
    adapter_right: int
    margin: float  # the gain (in share of items) promotion asks for
    min_items: int  # the fewest held-out items a promotion rests on

    @property
    def base_accuracy(self) -> float:
        return self.base_right / self.items if self.items else 0.0

    @property
    def adapter_accuracy(self) -> float:
        return self.adapter_right / self.items if self.items else 0.0

    @property
    def gain(self) -> float:
        return self.adapter_accuracy - self.base_accuracy

    def verdict(self) -> tuple[bool, str]:
        """Whether the evidence supports promotion, and the figures that say so."""
        figures = (
            f"{self.adapter_right}/{self.items} held-out decisions right with the adapter "
            f"({self.adapter_accuracy:.1%}) against {self.base_right}/{self.items} for the base "
            f"SLM ({self.base_accuracy:.1%}): {self.gain:+.1%}"
        )
        if self.items < self.min_items:
            return (
                False,
                f"{figures}; {self.items} held-out items are fewer than the {self.min_items} asked for",
            )
        if self.gain < self.margin:
            return False, f"{figures}, short of the {self.margin:+.1%} asked for"
        return True, f"{figures}, at least the {self.margin:+.1%} asked for"


@dataclass
class AdapterCard:
    """What an adapter is: its base model, what it learned from, how it measured."""

    name: str
    base_model: str  # the SLM it was trained on (catalog name or file name)
    base_file_size: int  # the base GGUF's size in bytes (a cheap check that it is the same file)
    created_at: str
    nodes: list[str]
    examples: int  # training examples
    comparison: dict[str, Any] | None = None  # ``Comparison`` as a dict
    promoted: bool = False
    verdict: str = ""
    training: dict[str, Any] = field(default_factory=dict)  # steps, seconds, peak memory, machine

    @classmethod
    def read(cls, path: Path) -> AdapterCard:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(**data)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(
                f"the adapter card {path} cannot be read: {exc}",
                hint="Remove the adapter's folder, or train it again with `tierflow learn`.",
            ) from exc


class AdapterStore:
    """The adapters in one folder (``<data dir>/adapters``), and which one the SLM loads."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _folder(self, name: str) -> Path:
        if not _NAME.fullmatch(name):
            raise TaskInputError(
                f"{name!r} is not an adapter name",
                hint="Names are letters, digits, '.', '_' and '-' (at most 64), e.g. lora-20261204-0930.",
            )
        return self.root / name

    def list(self) -> list[AdapterCard]:
        """Every adapter with a readable card, newest first."""
        if not self.root.is_dir():
            return []
        cards = [AdapterCard.read(card) for card in self.root.glob(f"*/{_CARD}")]
        return sorted(cards, key=lambda card: card.created_at, reverse=True)

    def card(self, name: str) -> AdapterCard:
        path = self._folder(name) / _CARD
        if not path.is_file():
            known = ", ".join(card.name for card in self.list()) or "none yet"
            raise TaskInputError(f"no adapter named {name!r}", hint=f"Adapters: {known}.")
        return AdapterCard.read(path)

    def file(self, name: str) -> Path:
        return self._folder(name) / ADAPTER_FILE

    def add(self, card: AdapterCard, adapter_file: Path) -> Path:
        """Keep a trained adapter (moved into its folder) with its card; not made active."""
        folder = self._folder(card.name)
        if folder.exists():
            raise TaskInputError(f"an adapter named {card.name!r} exists", hint="Choose another --name.")
        folder.mkdir(parents=True)
        shutil.move(str(adapter_file), folder / ADAPTER_FILE)
        self.write_card(card)
        return folder / ADAPTER_FILE

    def write_card(self, card: AdapterCard) -> None:
        _write_json(self._folder(card.name) / _CARD, asdict(card))

    def _state(self) -> dict[str, Any]:
        path = self.root / _ACTIVE
        if not path.is_file():
            return {"active": None, "history": []}
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"{path} cannot be read: {exc}",
                hint="Remove it to go back to the base SLM, or run `tierflow adapters use NAME`.",
            ) from exc
        return {"active": state.get("active"), "history": list(state.get("history") or [])}

    def active(self) -> str | None:
        """The adapter the SLM loads, or None for the base SLM."""
        active = self._state()["active"]
        return str(active) if active else None

    def use(self, name: str, *, force: bool = False) -> AdapterCard:
        """Make ``name`` the active adapter. One the evidence did not support is refused
        (with its figures) unless ``force``."""
        card = self.card(name)
        if not card.promoted and not force:
            raise TaskInputError(
                f"adapter {name!r} was not promoted: {card.verdict or 'it has no comparison'}",
                hint="Train on more verified decisions, or pass --force to use it anyway.",
            )
        if not self.file(name).is_file():
            raise ConfigError(
                f"adapter {name!r} has no {ADAPTER_FILE}", hint="Train it again with `tierflow learn`."
            )
        state = self._state()
        if state["active"] != name:
            state["history"].append(state["active"])
            state["active"] = name
            _write_json(self.root / _ACTIVE, state)
        return card

    def revert(self) -> str | None:
        """Go back to the adapter active before the current one (None: the base SLM)."""
        state = self._state()
        previous = state["history"].pop() if state["history"] else None
        state["active"] = previous
        _write_json(self.root / _ACTIVE, state)
        return previous


def _write_json(path: Path, data: Any) -> None:
    """Write atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        json.dump(data, stream, indent=1, ensure_ascii=False)
    os.replace(temporary, path)


def now_name() -> str:
    """A fresh adapter name from the time: ``lora-YYYYmmdd-HHMMSS``."""
    return "lora-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
