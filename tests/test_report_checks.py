"""The cross-document report's sections hold what their titles promise, mended by code."""

from __future__ import annotations

from tierflow.graphs.report_checks import mend_report
from tierflow.graphs.summaries import summaries_text

SUMMARIES = summaries_text(
    {
        "north.pdf": "The northern plant made 4,200 tonnes of steel in March. Its furnace cut energy use.",
        "south.pdf": "The southern plant was shut for repairs and made nothing. Output fell 10% on the year.",
    }
)


def test_a_sound_report_is_left_as_it_is() -> None:
    report = (
        "## Themes\n- Both plants make steel [north.pdf][south.pdf]\n\n"
        "## Differences\n- One ran, one was closed [north.pdf][south.pdf]\n\n"
        "## Key numbers\n- 4,200 tonnes in March [north.pdf]\n"
    )
    mended = mend_report(report, SUMMARIES)
    assert mended.report == report and mended.changes == []


def test_key_numbers_without_a_figure_are_replaced_by_the_summaries_own() -> None:
    report = "## Themes\n- Steel output [north.pdf]\n\n## Key numbers\n- The figures vary [south.pdf]\n"
    mended = mend_report(report, SUMMARIES)
    numbers = mended.report.split("## Key numbers")[1]
    assert "- The northern plant made 4,200 tonnes of steel in March. [north.pdf]" in numbers
    assert "- Output fell 10% on the year. [south.pdf]" in numbers
    assert "The figures vary" not in numbers and "## Themes\n- Steel output [north.pdf]" in mended.report
    assert mended.changes == ["'Key numbers' stated none of the summaries' figures: 2 quoted instead"]


def test_themes_that_repeat_a_summary_word_for_word_are_dropped() -> None:
    copy = "The southern plant was shut for repairs and made nothing. Output fell 10% on the year."
    report = f"## Themes\n- {copy} [south.pdf]\n\n## Differences\n- {copy}\n- The north ran [north.pdf]\n"
    mended = mend_report(report, SUMMARIES)
    themes, differences = mended.report.split("## Differences")
    assert copy not in themes and "nothing beyond what the summaries above say" in themes
    assert copy not in differences and "- The north ran [north.pdf]" in differences
    assert len(mended.changes) == 2


def test_summaries_without_figures_ask_for_none() -> None:
    plain = summaries_text({"a.md": "Alpha is red.", "b.md": "Beta is blue."})
    report = "## Key numbers\n- None stated.\n"
    assert mend_report(report, plain).report == report
