"""Which signals tell a wrong SLM cited answer from a right one, on the labels a calibration
gathered (``tierflow eval memory --calibrate``): for each signal, the AUC of ranking the
wrong answers above the right ones (0.5: no better than chance; 1: a perfect ranking).

Read are the answer step's own signals (what its calibrated scorer weighs, recorded on each
SLM call) and some of the evidence's, taken from the trace: the best chunk's similarity and
its lead over the second, where the first cited chunk ranked, how many chunks the SLM
cited, how many words the answer has and how many of them the question already holds, and
how much of the question the cited chunks hold. A label from a gold answer wins over a
shadow label of the same output.

Run: ``python -m tierflow.evals.answer_signals [DATA_DIR]`` (default: the calibration's data
directory under the settings' data dir).
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tierflow.agents.calibration import label_per_output
from tierflow.memory.traces import TraceStore

__all__ = ["auc", "answer_rows", "signal_aucs"]

_WORD = re.compile(r"[a-z0-9_]+")
_STOP = frozenset(
    "a an and are as at be by can do does for from get how i if in is it me my of on or should "
    "that the this to was were what when where which who why with you your".split()
)


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 2}


def auc(wrong: Sequence[float], right: Sequence[float]) -> float | None:
    """The chance that a wrong output's value is above a right one's (ties count half)."""
    if not wrong or not right:
        return None
    above = sum((w > r) + 0.5 * (w == r) for w in wrong for r in right)
    return round(above / (len(wrong) * len(right)), 3)


def answer_rows(store: TraceStore, graph: str = "ask") -> list[tuple[dict[str, float], bool]]:
    """Per labelled SLM answer: its signals and whether it was right."""
    rows: list[tuple[dict[str, float], bool]] = []
    for label in label_per_output(store.labels(graph=graph)):
        trace = store.get_run(label.run_id)
        calls = {call.id: call for step in trace.steps for call in step.model_calls}
        retrieved = next((s.evidence for s in trace.steps if s.node == "retrieve"), None) or {}
        call = calls.get(label.model_call_id)
        if call is None or not call.raw_output:
            continue
        try:
            reply: dict[str, Any] = json.loads(call.raw_output)
        except json.JSONDecodeError:
            continue
        shown = list(retrieved.get("retrieved") or [])[:4]
        sources = [n for n in reply.get("sources") or [] if isinstance(n, int) and 1 <= n <= len(shown)]
        cited = " ".join(shown[n - 1]["text"] for n in sources)
        question, answer = _words(str(retrieved.get("query", ""))), _words(str(reply.get("answer", "")))
        similarities = [float(e["similarity"]) for e in shown] or [0.0]
        evidence = {
            "best_similarity": similarities[0],
            "lead_over_second": similarities[0] - (similarities[1] if len(similarities) > 1 else 0.0),
            "first_cited_rank": float(sources[0] if sources else len(shown) + 1),
            "chunks_cited": float(len(sources)),
            "answer_words": float(len(answer)),
            "answer_words_in_question": len(answer & question) / max(1, len(answer)),
            "question_in_cited": len(question & _words(cited)) / max(1, len(question)),
        }
        rows.append(({**label.features, **evidence}, label.slm_right))
    return rows


def signal_aucs(rows: Sequence[tuple[dict[str, float], bool]]) -> dict[str, float | None]:
    names = dict.fromkeys(name for features, _ in rows for name in features)
    return {
        name: auc(
            [features.get(name, 0.0) for features, right in rows if not right],
            [features.get(name, 0.0) for features, right in rows if right],
        )
        for name in names
    }


def main() -> None:
    from tierflow.settings import load_settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = load_settings().resolved_data_dir() / "eval-memory-calibrate-calibration"
    parser.add_argument("data_dir", type=Path, nargs="?", default=default)
    folder = parser.parse_args().data_dir
    rows = answer_rows(TraceStore.from_url(f"sqlite:///{folder / 'tierflow.db'}"))
    wrong = sum(not right for _, right in rows)
    print(json.dumps({"answers": len(rows), "wrong": wrong, "auc": signal_aucs(rows)}, indent=1))


if __name__ == "__main__":
    main()
