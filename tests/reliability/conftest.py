"""The reliability suite's tally: each test adds what it injected and what it found, and a
run with ``TIERFLOW_RELIABILITY_REPORT=DIR`` (``make reliability``) writes the totals to
DIR/reliability.json and .md (the table in the README)."""

from __future__ import annotations

import json
import os
import threading
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tierflow.evals.readme import RELIABILITY_COUNTS, reliability_table

COUNTS = dict(RELIABILITY_COUNTS)


class Tally:
    def __init__(self) -> None:
        self.counts: dict[str, float] = defaultdict(float)
        self.by_test: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.longest_tool_s = 0.0
        self._lock = threading.Lock()

    def add(self, test: str, **counts: float) -> None:
        with self._lock:
            for key, value in counts.items():
                if key == "longest_tool_s":
                    self.longest_tool_s = max(self.longest_tool_s, value)
                    continue
                assert key in COUNTS, key
                self.counts[key] += value
                self.by_test[test][key] += value

    def report(self) -> dict[str, Any]:
        return {
            **{key: self.counts.get(key, 0) for key in COUNTS},
            "longest_tool_call_s": round(self.longest_tool_s, 2),
            "by_test": {test: dict(counts) for test, counts in sorted(self.by_test.items())},
        }


TALLY = Tally()


@pytest.fixture
def tally(request: pytest.FixtureRequest) -> Iterator[Any]:
    name = request.node.nodeid.split("::", 1)[-1]

    def add(**counts: float) -> None:
        TALLY.add(name, **counts)

    yield add


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    target = os.environ.get("TIERFLOW_RELIABILITY_REPORT")
    if not target or exitstatus != 0:
        return
    data = TALLY.report()
    folder = Path(target)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "reliability.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    (folder / "reliability.md").write_text(
        "# Reliability suite (tests/reliability/)\n\n"
        + reliability_table(data)
        + "\nMade by `make reliability` (pytest tests/reliability with the tally on).\n",
        encoding="utf-8",
    )
