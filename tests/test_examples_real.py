"""The example graphs on the real local SLM (the LLM tier scripted, so only the SLM's
behaviour is under test), and the kit's steps against llama.cpp for real."""

from __future__ import annotations

from pathlib import Path

import pytest
from tierflow import run_graph
from tierflow.agents.slm import LlamaCppModel
from tierflow.agents.tiers import Tiers
from tierflow.graphs.examples import lecture_notes, triage
from tierflow.memory import TraceStore

from tests.kit_support import scripted_tiers

pytestmark = pytest.mark.real_slm

REPORT = (
    "Subject: invoice charged twice\n\nHello, my credit card was charged twice for the March "
    "invoice of the Pro plan (2 x 49 EUR). Please refund one payment. Regards, Jo Park, "
    "jo.park@example.com"
)
NOTES = """# Photosynthesis
Plants turn light, water and carbon dioxide into glucose and oxygen. Chlorophyll is the green
pigment that absorbs light. It happens in the chloroplasts.

# Cellular respiration
Cells break glucose down with oxygen to release energy stored as ATP. ATP (adenosine
triphosphate) is the energy currency of the cell. It happens in the mitochondria.
"""


@pytest.fixture(scope="module")
def slm(slm_path: Path) -> LlamaCppModel:
    return LlamaCppModel(slm_path, n_ctx=4096, n_threads=2)


def test_triage_on_the_real_slm(slm: LlamaCppModel, store: TraceStore) -> None:
    llm = scripted_tiers(llm={"draft_reply": ["Thank you, finance will refund you."]}).llm
    result = run_graph(triage.graph, {"report": REPORT}, tiers=Tiers(slm, llm), store=store)
    assert result.ok, result.error
    assert result.state["category"] in triage.CATEGORIES
    fields = result.state["fields"]
    assert isinstance(fields, triage.ReportFields) and fields.product.strip()
    trace = store.get_run(result.run_id)
    classify = next(c for s in trace.steps for c in s.model_calls if s.node == "classify")
    assert classify.tier == "slm" and classify.confidence is not None  # the choice is scored
    assert 0.0 < classify.confidence <= 1.0
    extraction = next(c for s in trace.steps for c in s.model_calls if s.node == "extract_fields")
    assert extraction.signals is not None and extraction.signals.tokens > 0  # stored with the call


def test_lecture_notes_on_the_real_slm(slm: LlamaCppModel, store: TraceStore) -> None:
    tiers = Tiers(slm, scripted_tiers().llm)
    result = run_graph(lecture_notes.graph, {"notes": NOTES}, tiers=tiers, store=store, policy="slm")
    assert result.ok, result.error
    topics = result.state["per_topic"]
    assert len(topics) == 2 and all(t.key_points for t in topics)
    assert result.state["cross_topic"].questions
    trace = store.get_run(result.run_id)
    assert {c.tier for s in trace.steps for c in s.model_calls} == {"slm"}


def test_redaction_finds_names_with_the_real_slm(slm: LlamaCppModel, store: TraceStore) -> None:
    from tests.kit_support import recording_llm

    llm, client = recording_llm(lambda request: "Thanks [NAME_1], we refund you.")
    result = run_graph(triage.graph, {"report": REPORT}, tiers=Tiers(slm, llm), store=store, redact=True)
    assert result.ok, result.error
    sent = client.sent_text()
    assert "Jo Park" not in sent and "jo.park@example.com" not in sent
    assert result.state["reply"] == "Thanks Jo Park, we refund you."
