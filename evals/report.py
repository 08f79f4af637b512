"""Result files under ``evals/results/``: one JSON document per suite (with the commit, models,
settings and machine that produced it) and a short Markdown summary beside it."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from tierflow.errors import TierflowError

if TYPE_CHECKING:
    from tierflow.agents.tiers import Tiers
    from tierflow.settings import Settings, TierPolicy

__all__ = [
    "RESULTS_DIR",
    "environment",
    "models_environment",
    "evaluation_settings",
    "git_commit",
    "write_results",
    "read_results",
    "record_policy",
    "evaluate_policies",
    "tier_models",
    "markdown_table",
    "MIN_GAP",
    "gap_closed",
]

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _git(*args: str, cwd: Path = Path(__file__).parent) -> str | None:
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, cwd=cwd, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    return round(pages * size / 2**30, 1)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


_RESULT_PATHS = (":(top)", ":(top,exclude)evals/results", ":(top,exclude)README.md")


def git_commit() -> str | None:
    """The checkout's commit (None: not a checkout)."""
    return _git("rev-parse", "HEAD")


def git_dirty(cwd: Path = Path(__file__).parent) -> bool | None:
    """Whether tracked files other than results differ from the commit (None: not a checkout).

    Results and the README generated from them change while a series of evaluations runs;
    only a change elsewhere (code, prompts, data) makes a result's commit inexact."""
    status = _git("status", "--porcelain", "--untracked-files=no", "--", *_RESULT_PATHS, cwd=cwd)
    return bool(status) if status is not None else None


def environment(
    settings: dict[str, Any] | None = None, models: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What produced a result: commit, models, settings, machine and library versions."""
    return {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["tierflow", *sys.argv[1:]]) if sys.argv else None,
        "git_commit": git_commit(),
        "git_dirty": git_dirty(),
        "models": models or {},
        "settings": settings or {},
        "machine": {
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "memory_gib": _memory_gib(),
            "os": platform.platform(),
            "python": platform.python_version(),
        },
        "versions": {
            name: _version(name)
            for name in ("tierflow", "llama_cpp_python", "langgraph", "openai", "bfcl-eval")
        },
    }


def evaluation_settings(conf: Settings) -> Settings:
    """The settings an evaluation runs with: ``conf`` with no shadow calls (an evaluation
    measures each policy as it is; a shadow would add LLM calls to its figures)."""
    return conf.model_copy(update={"shadow_rate": 0.0})


def models_environment(conf: Settings) -> dict[str, Any]:
    """``environment`` of a run on ``conf``'s own models (its SLM and its embedded LLM), with
    the settings masked; taken when the run starts, so that it names the code that ran."""
    return environment(conf.masked(), {"slm": conf.slm_model, "llm": conf.embedded_llm_model})


def read_results(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise TierflowError(
            f"cannot read results file {path}: {exc}", hint="Delete it to start a new one."
        ) from None
    return data if isinstance(data, dict) else {}


def write_results(path: Path, data: dict[str, Any], markdown: str) -> None:
    """Write the JSON and its ``.md`` summary atomically (a crash leaves the old files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for target, text in (
        (path, json.dumps(data, indent=1, ensure_ascii=False, default=str) + "\n"),
        (path.with_suffix(".md"), markdown),
    ):
        partial = target.with_name(target.name + ".partial")
        partial.write_text(text, encoding="utf-8")
        partial.replace(target)


MIN_GAP = 0.03
"""The least slm-to-llm gap whose closed share is reported (a share of a smaller gap says nothing)."""


def gap_closed(slm: float, tiered: float, llm: float) -> float | None:
    """The share of the slm-to-llm accuracy gap that tiered closes; ``None`` when the LLM is
    less than ``MIN_GAP`` ahead."""
    return (tiered - slm) / (llm - slm) if llm - slm >= MIN_GAP else None


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def record_policy(
    path: Path,
    suite: str,
    kind: str,
    label: str,
    entry: dict[str, Any],
    markdown: Callable[[dict[str, Any]], str],
) -> dict[str, Any]:
    """Put one policy's results into a suite's file, keeping the other policies' entries."""
    data = read_results(path)
    data.update(suite=suite, kind=kind)
    data.setdefault("policies", {})[label] = entry
    write_results(path, data, markdown(data))
    return data


class _ItemResult(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


R = TypeVar("R", bound=_ItemResult)


def tier_models(tiers: Tiers) -> dict[str, str]:
    return {"slm": tiers.slm.name, "llm": tiers.llm.name}


def evaluate_policies(
    path: Path,
    suite: str,
    kind: str,
    tiers: Tiers,
    policies: dict[str, TierPolicy],
    *,
    run: Callable[[str, TierPolicy], list[R]],
    summarize: Callable[[list[R]], dict[str, Any]],
    fields: dict[str, Any],
    settings: dict[str, Any],
    markdown: Callable[[dict[str, Any]], str],
) -> dict[str, Any]:
    """Run every policy on the same items (``run(label, policy)``) and merge each policy's
    entry into the suite's file as soon as it finishes, so an interrupted series keeps the
    policies already done. ``fields`` describe the items (seed, ids) in every entry."""
    tiers.load(*{tier for policy in policies.values() for tier in policy.tiers_used()})
    data: dict[str, Any] = {}
    for label, policy in policies.items():
        # Taken before the items run: the commit and settings that produced them.
        env = environment(settings, tier_models(tiers))
        items = run(label, policy)
        entry = {
            "policy": policy.model_dump(),
            **fields,
            "metrics": summarize(items),
            "environment": env,
            "items": [item.to_dict() for item in items],
        }
        data = record_policy(path, suite, kind, label, entry, markdown)
    return data
