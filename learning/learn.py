"""``tierflow learn``: gather lessons, train an adapter, measure it, promote it on evidence.

1. The lessons of the stored runs (``tierflow.memory.lessons``), or of a file, are split by
   run: a held-out slice that training never sees, and the rest to train on.
2. An adapter is trained on the SLM (``train.train_adapter``) and written as a GGUF LoRA
   adapter (``convert.to_gguf_adapter``).
3. Base SLM and SLM + adapter answer every held-out choice and extraction
   (``compare.compare``). The adapter is promoted (made active) only when it is right on at
   least ``margin`` more of them, on at least ``min_held_out`` items; the comparison is
   kept on its card either way.

A stopped run (Ctrl-C, ``max_minutes``) keeps its checkpoint in ``<data dir>/learn/<key>/``:
the same command with the same lessons and options goes on from it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tierflow.agents.adapters import AdapterCard, AdapterStore, Comparison, now_name
from tierflow.agents.protocol import ChatModel, Completion, Message, Tier
from tierflow.errors import TaskInputError
from tierflow.learning.compare import as_dict, comparable, compare
from tierflow.learning.train import TrainOptions, TrainResult, train_adapter
from tierflow.memory.lessons import Lesson, LessonSummary, is_held_out, lessons
from tierflow.memory.traces import TraceStore
from tierflow.records import OnProgress, Progress

__all__ = [
    "LearnOptions",
    "Dataset",
    "LearnOutcome",
    "gather",
    "read_lessons",
    "write_lessons",
    "learn",
    "MIN_TRAIN",
]

MIN_TRAIN = 10
"""The fewest lessons an adapter is trained on."""


@dataclass(frozen=True)
class LearnOptions:
    """What ``tierflow learn`` learns from, and what a promotion asks for."""

    nodes: tuple[str, ...] = ()
    since: datetime | None = None
    include_private: bool = False
    from_file: Path | None = None
    held_out: float = 0.2  # the share of runs set aside for the comparison
    margin: float = 0.05  # the gain on held-out decisions a promotion asks for
    min_held_out: int = 20  # the fewest held-out decisions a promotion rests on
    name: str | None = None
    train: TrainOptions = field(default_factory=TrainOptions)


@dataclass
class Dataset:
    """The lessons split for training and for the comparison, with what was dropped."""

    train: list[Lesson]
    held_out: list[Lesson]
    summary: LessonSummary

    def check_trainable(self) -> None:
        """A ``TaskInputError`` when there are too few lessons to train an adapter on."""
        if len(self.train) < MIN_TRAIN:
            raise TaskInputError(
                f"{len(self.train)} lessons to train on; an adapter needs at least {MIN_TRAIN}",
                hint="Run more tasks (the LLM's decisions and confirmed SLM outputs become lessons), "
                "or see what was left out with --dry-run.",
            )

    @property
    def comparable_held_out(self) -> int:
        return sum(1 for lesson in self.held_out if comparable(lesson))

    def to_json(self) -> dict[str, Any]:
        by_node: dict[str, dict[str, int]] = {}
        for part, items in (("train", self.train), ("held_out", self.held_out)):
            for lesson in items:
                by_node.setdefault(lesson.node, {"train": 0, "held_out": 0})[part] += 1
        return {
            **self.summary.to_json(),
            "train": len(self.train),
            "held_out": len(self.held_out),
            "held_out_comparable": self.comparable_held_out,
            "split_by_node": dict(sorted(by_node.items())),
        }


@dataclass
class LearnOutcome:
    """What a learn run did: the data, the training, the comparison and the verdict."""

    dataset: Dataset
    training: TrainResult | None = None
    comparison: Comparison | None = None
    card: AdapterCard | None = None
    promoted: bool = False
    verdict: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "data": self.dataset.to_json(),
            "training": self.training.to_json() if self.training else None,
            "comparison": as_dict(self.comparison) if self.comparison else None,
            "adapter": asdict(self.card) if self.card else None,
            "promoted": self.promoted,
            "verdict": self.verdict,
        }


def read_lessons(path: Path) -> list[Lesson]:
    """Lessons from a JSON-lines file: lesson lines as ``write_lessons`` writes them (a
    trained adapter's ``lessons.jsonl``, whose ``split`` of each line is dropped, since the
    lessons are split again; the learning curve's ``taught*.jsonl``), or OpenAI chat
    fine-tuning lines (``{"messages": [..., {"role": "assistant", ...}]}``, as ``tierflow
    export distill`` writes), which become text lessons grouped by line."""
    found: list[Lesson] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise TaskInputError(f"cannot read {path}: {exc}", hint="Give a UTF-8 JSON-lines file.") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            if "target" in data:
                found.append(Lesson.from_json({k: v for k, v in data.items() if k != "split"}))
                continue
            *messages, reply = data["messages"]
            if reply["role"] != "assistant" or not messages:
                raise ValueError("the last message is not the assistant's reply")
            run_id = str((data.get("metadata") or {}).get("run_id") or f"{path.name}:{number}")
            node = str((data.get("metadata") or {}).get("node") or "text")
            found.append(Lesson(messages, str(reply["content"]), None, "text", node, run_id, "llm"))
        except (ValueError, KeyError, TypeError) as exc:
            raise TaskInputError(
                f"{path} line {number} is not a lesson: {exc}",
                hint='Each line is {"messages": [...]} ending in the assistant\'s reply, or a lesson.',
            ) from None
    return found


def gather(store: TraceStore | None, options: LearnOptions) -> Dataset:
    """The lessons, split by run into training and held-out slices."""
    summary = LessonSummary()
    if options.from_file is not None:
        found = [
            lesson
            for lesson in read_lessons(options.from_file)
            if not options.nodes or lesson.node in options.nodes
        ]
        summary.kept.update(lesson.source for lesson in found)
        summary.by_node.update(lesson.node for lesson in found)
    else:
        assert store is not None
        found = list(
            lessons(
                store,
                summary,
                nodes=options.nodes,
                since=options.since,
                include_private=options.include_private,
            )
        )
    held = [lesson for lesson in found if is_held_out(lesson.run_id, options.held_out)]
    train = [lesson for lesson in found if not is_held_out(lesson.run_id, options.held_out)]
    return Dataset(train, held, summary)


def learn(
    dataset: Dataset,
    options: LearnOptions,
    *,
    base_gguf: Path,
    base_model: str,
    adapters: AdapterStore,
    work_root: Path,
    slm: Callable[[Path | None], ChatModel],
    on_progress: OnProgress | None = None,
) -> LearnOutcome:
    """Train, convert, compare and (on evidence) promote; ``slm(lora_path)`` builds the SLM
    with or without an adapter."""
    from tierflow.learning.convert import to_gguf_adapter

    report: OnProgress = on_progress or (lambda _: None)
    outcome = LearnOutcome(dataset)
    dataset.check_trainable()
    work = work_root / _key(dataset, options)
    work.mkdir(parents=True, exist_ok=True)
    write_lessons(work / "lessons.jsonl", dataset.train, held_out=dataset.held_out)
    outcome.training = train_adapter(base_gguf, dataset.train, work, options.train, on_progress=report)
    if outcome.training.ended == "interrupted":
        return outcome
    gguf_file = work / "adapter.gguf"
    report(Progress("writing the GGUF adapter", note=str(gguf_file)))
    written = to_gguf_adapter(outcome.training.adapter_dir, base_gguf, gguf_file)
    outcome.comparison = compare(
        _Lazy(slm, None),
        _Lazy(slm, gguf_file),
        dataset.held_out,
        margin=options.margin,
        min_items=options.min_held_out,
        on_progress=report,
    )
    outcome.promoted, outcome.verdict = outcome.comparison.verdict()
    card = AdapterCard(
        name=options.name or now_name(),
        base_model=base_model,
        base_file_size=base_gguf.stat().st_size,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        nodes=sorted({lesson.node for lesson in dataset.train}),
        examples=len(dataset.train),
        comparison=as_dict(outcome.comparison),
        promoted=outcome.promoted,
        verdict=outcome.verdict,
        training={**outcome.training.to_json(), **written, "options": asdict(options.train)},
    )
    card.training.pop("adapter_dir", None)
    adapters.add(card, gguf_file)
    if outcome.promoted:
        adapters.use(card.name)
    outcome.card = card
    return outcome


class _Lazy:
    """An SLM built on its first call (the comparison's two passes each load their own)."""

    tier: Tier = "slm"

    def __init__(self, build: Callable[[Path | None], ChatModel], lora: Path | None) -> None:
        self._build, self._lora = build, lora
        self.name = "slm" if lora is None else f"slm+{lora.parent.name}"
        self._model: ChatModel | None = None

    def complete(
        self, messages: Sequence[Message], *, schema: dict[str, Any] | None = None, max_tokens: int
    ) -> Completion:
        if self._model is None:
            self._model = self._build(self._lora)
        return self._model.complete(messages, schema=schema, max_tokens=max_tokens)


def _key(dataset: Dataset, options: LearnOptions) -> str:
    """The work folder of these lessons and options: the same command resumes in it."""
    text = json.dumps(
        [[lesson.to_json() for lesson in dataset.train], asdict(options.train), options.name],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_lessons(path: Path, lessons: Sequence[Lesson], *, held_out: Sequence[Lesson] | None = None) -> None:
    """Lessons as JSON lines, in order (owner-readable only: they hold the users' prompts).
    With ``held_out`` (what a run trained and compared on, for the record), each line also
    says its split, ``train`` or ``held_out``, and the held-out lessons follow."""
    if held_out is None:
        lines = [json.dumps(lesson.to_json(), ensure_ascii=False) for lesson in lessons]
    else:
        lines = [json.dumps({**lesson.to_json(), "split": "train"}, ensure_ascii=False) for lesson in lessons]
        lines += [
            json.dumps({**lesson.to_json(), "split": "held_out"}, ensure_ascii=False) for lesson in held_out
        ]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    os.chmod(path, 0o600)


def stale_scorers(scorers_dir: Path, base_name: str) -> list[str]:
    """The calibrated nodes (``graph/node``) fitted on the base SLM: an adapted SLM is
    another model, so they no longer judge it until refitted."""
    stale: list[str] = []
    for path in sorted(scorers_dir.glob("*.json")) if scorers_dir.is_dir() else []:
        try:
            nodes = json.loads(path.read_text(encoding="utf-8")).get("nodes", {})
        except (OSError, ValueError):
            continue
        stale += [
            f"{path.stem}/{node}"
            for node, data in nodes.items()
            if (data.get("trained_on") or {}).get("slm") == base_name
        ]
    return stale
