"""Checks by code of a summary's faithfulness: names, figures given to the right subject,
and every part of a long document drawn on."""

from __future__ import annotations

import pytest
from tierflow.agents.escalation import Rejected
from tierflow.agents.faithfulness import (
    every_part_drawn_on,
    names_grounded,
    numbers_attributed,
    part_label,
    split_parts,
)

SOURCE = (
    "The study compared two models on the same benchmark. Falcon reached 85% accuracy after "
    "two days of training. Its errors were mostly on long questions. Osprey reached 78% "
    "accuracy, but trained in half the time. The authors prefer Osprey for small budgets."
)


def rejected(check, summary: str, source: str) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(Rejected) as caught:
        check(summary, source)
    return caught.value.code


def test_a_faithful_summary_passes_every_check() -> None:
    summary = (
        "Falcon scored 85% accuracy but needed two days of training; Osprey scored 78% in half "
        "the time. The authors prefer Osprey when the budget is small."
    )
    for check in (names_grounded, numbers_attributed, every_part_drawn_on):
        check(summary, SOURCE)


def test_a_figure_given_to_the_other_side_of_a_comparison_is_caught() -> None:
    swapped = "In the comparison, Osprey reached 85% accuracy while Falcon reached 78%."
    assert rejected(numbers_attributed, swapped, SOURCE) == "misattributed"


def test_a_paraphrased_subject_is_not_a_rival() -> None:
    # "scored" and "benchmark" are the summary's own words, or words the source never ties
    # to another figure: not a claim about someone else
    numbers_attributed("On the benchmark, the first model scored 85% accuracy.", SOURCE)


def test_a_name_the_source_never_uses_is_caught() -> None:
    assert rejected(names_grounded, "The study by Google found Falcon best.", SOURCE) == "ungrounded_names"
    names_grounded("Falcon was more accurate than Osprey.", SOURCE)


NOTES = (
    part_label(1, 2) + "The survey asked 1,200 farmers about irrigation and drought across "
    "three provinces during the spring season.\n\n"
    + part_label(2, 2)
    + "Its main table shows wheat yields falling 14% where wells dried, against 3% where "
    "canals delivered water reliably."
)


def test_a_summary_that_covers_only_the_first_part_is_caught() -> None:
    assert split_parts(NOTES)[1].startswith("Its main table")
    first_only = "A survey of 1,200 farmers in three provinces asked about irrigation and drought."
    assert rejected(every_part_drawn_on, first_only, NOTES) == "misses_part"
    both = "A survey of 1,200 farmers found wheat yields fell 14% where wells dried, 3% with canals."
    every_part_drawn_on(both, NOTES)


def test_notes_without_parts_are_not_split() -> None:
    assert split_parts("One paragraph.\n\nAnother paragraph.") == ["One paragraph.\n\nAnother paragraph."]
    every_part_drawn_on("Anything.", "One paragraph.\n\nAnother paragraph.")


def test_a_document_summary_that_skips_a_part_escalates_in_the_batch_graph(tmp_path: object) -> None:
    from pathlib import Path

    from tierflow.agents.scripted import ScriptedModel
    from tierflow.agents.tiers import Tiers
    from tierflow.graphs.running import run_graph
    from tierflow.graphs.summaries import document_graph
    from tierflow.memory import TraceStore

    first = "The survey asked farmers in three provinces about irrigation during the spring season. " * 2
    second = "Its main table shows wheat yields falling where wells dried and holding where canals ran. " * 2
    small = ScriptedModel(
        by_node={
            "summarize_chunk": [
                "Farmers in three provinces were asked about irrigation.",
                "Wheat yields fell where wells dried.",
            ],
            "document_summary": ["Farmers in three provinces were asked about irrigation in spring."],
        }
    )
    large = ScriptedModel(
        ["Farmers were surveyed on irrigation; wheat yields fell where wells dried."], tier="llm"
    )
    store = TraceStore.from_url(f"sqlite:///{Path(str(tmp_path)) / 'traces.db'}")
    result = run_graph(
        document_graph(max_sentences=3),
        {"document": "survey.txt", "text": first + "\n\n" + second},
        tiers=Tiers(small, large),
        store=store,
        context={"chunk_tokens": 60},
    )
    assert result.status == "succeeded", result.error
    assert "wheat yields fell" in result.state["summary"]
    calls = [call for step in store.get_run(result.run_id).steps for call in step.model_calls]
    [skipping] = [call for call in calls if call.node == "document_summary" and call.tier == "slm"]
    assert skipping.escalated and (skipping.escalation_reason or "").startswith(
        "misses_part: it says nothing of part 2"
    )
    assert "Part 2 of 2: Wheat yields fell" in skipping.messages[-1]["content"]
