"""A customer-support FAQ bot over a folder of local documents: it answers from the
documents, names the ones it used, and hands a question they do not answer to a person.

    tierflow run --graph tierflow.graphs.examples.support_faq:graph \\
        --input '{"question": "Can I get my money back?"}'

``docs`` in the input names the folder (default: the sample help centre of a note-taking
app beside this file). It is added to the document memory's ``support`` collection first;
files already there unchanged are left as they are, so only the first run reads them all.
Retrieval and the answer run on the SLM; an answer over weak evidence or that its sources
do not hold escalates to the LLM under ``tiered``. With ``local_only`` (``tierflow run
--local-only``, or ``"local_only": true`` in the input for a new collection) the documents
never leave the machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Required

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from tierflow.graphs.citing import MemorySource, cited_answer, open_memory, retrieve
from tierflow.graphs.context import TierContext
from tierflow.graphs.grounding import Evidence
from tierflow.graphs.steps import StepScope, tiered_node
from tierflow.tools.readers import find_inputs
from typing_extensions import TypedDict

SAMPLE_DOCS = Path(__file__).resolve().parent / "support_docs"
COLLECTION = "support"
HANDOFF = "I could not find this in our help pages, so I have passed your question to our support team."
INSTRUCTIONS = "You answer customers' questions for a support desk, politely and briefly."


class FaqInput(TypedDict, total=False):
    question: Required[str]
    docs: str  # a folder (or file) of help documents; the sample help centre by default
    local_only: bool  # a new collection's privacy: its chunks never go to the LLM


class FaqState(FaqInput, total=False):
    evidence: list[Evidence]
    answer: str
    citations: list[Evidence]
    handoff: bool  # no document answered: a person should


def build_graph(
    memory: MemorySource = None, *, collection: str = COLLECTION
) -> CompiledStateGraph[FaqState, TierContext, FaqInput, FaqState]:
    """ingest → retrieve → answer → route, over ``memory`` (default: the run's own, which
    ``tierflow.run_graph`` opens in the settings' folder)."""

    def ingest(state: FaqState, scope: StepScope) -> dict[str, Any]:
        files = find_inputs([state.get("docs") or str(SAMPLE_DOCS)])
        added = open_memory(memory, scope.ctx).add_all(
            files, collection=collection, local_only=state.get("local_only")
        )
        counts = {
            status: sum(a.status == status for a in added) for status in ("added", "replaced", "unchanged")
        }
        failed = [f"{Path(a.source).name}: {a.reason}" for a in added if a.status == "failed"]
        scope.summarize_as(
            ", ".join(f"{n} {status}" for status, n in counts.items() if n)
            + (f"; failed: {'; '.join(failed)}" if failed else "")
        )
        return {}

    def route(state: FaqState) -> dict[str, Any]:
        return {"handoff": not state.get("citations")}

    graph = StateGraph(FaqState, context_schema=TierContext, input_schema=FaqInput)
    graph.add_node("ingest", tiered_node(ingest))
    graph.add_node("retrieve", retrieve(memory, query="question", collections=[collection]))
    graph.add_node("answer", cited_answer(question="question", instructions=INSTRUCTIONS, not_found=HANDOFF))
    graph.add_node("route", route)
    graph.add_edge(START, "ingest")
    graph.add_edge("ingest", "retrieve")
    graph.add_edge("retrieve", "answer")
    graph.add_edge("answer", "route")
    graph.add_edge("route", END)
    return graph.compile(name="support_faq")


graph = build_graph()
