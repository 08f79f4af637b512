"""``make bench``: what tierflow itself costs, measured side by side in one run.

1. Orchestration overhead: the task graph (tracing to SQLite, prompts rendered, outputs
   parsed, a real calculator call) on zero-latency scripted models, against a bare LangGraph
   graph of the same shape whose nodes return fixed updates; per node and as a ratio.
2. SLM throughput: the same prompts through tierflow's SLM adapter and through
   ``llama_cpp.Llama.create_chat_completion`` directly, on one loaded model, cache reset
   before every call; tokens per second and the ratio.
3. Tool-selection latency (p50/p95) with 5 and with 20 registered tools, through the real
   select_tool node on the SLM, with llama.cpp's prompt-prefix cache warm (the tool list is
   the prompt's prefix, so it is reused between calls) and cold (cache reset per call).
4. Peak memory (RSS high-water mark) of a task run with the default models, for the
   tierflow process and for the embedded LLM server.
5. Load: N = 1, 2, 4, 8 task runs at once sharing one SLM (``evals/load.py``).
"""

from __future__ import annotations

import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from tierflow.agents.scripted import Reply, ScriptedModel
from tierflow.agents.slm import LlamaCppModel
from tierflow.agents.tiers import Tiers
from tierflow.evals.load import load_markdown
from tierflow.evals.report import markdown_table
from tierflow.evals.toolcalls import percentile
from tierflow.graphs import nodes
from tierflow.graphs.nodes import TaskContext
from tierflow.graphs.runner import TaskRunner
from tierflow.graphs.running import RunSpec, execute
from tierflow.graphs.state import TaskState
from tierflow.graphs.steps import tiered_node
from tierflow.memory.traces import TraceStore
from tierflow.results import bench_rows
from tierflow.settings import TierPolicy
from tierflow.tools.base import Tool
from tierflow.tools.builtins import default_registry
from tierflow.tools.registry import ToolRegistry

__all__ = [
    "orchestration_overhead",
    "signal_costs",
    "slm_throughput",
    "selection_latency",
    "peak_memory",
    "bench_markdown",
]

# One task through every node: plan (1 step) → select_tool → extract_args → act → answer.
_SCRIPT: dict[str, list[Reply]] = {
    "plan": [{"steps": ["multiply 17 by 23 and add 4"], "answer": ""}],
    "select_tool": [{"tool": "calculator"}],
    "extract_args": [{"expression": "17 * 23 + 4"}],
    "answer": ["395"],
}
_NODES_PER_RUN = 5


def _scripted_tiers(runs: int) -> Tiers:
    script = {marker: replies * runs for marker, replies in _SCRIPT.items()}
    return Tiers(ScriptedModel(tier="slm", by_node=script), ScriptedModel(tier="llm", by_node=script))


def _bare_graph() -> Any:
    """The task graph's shape with nodes that only return their update: LangGraph alone."""
    updates: dict[str, Callable[[TaskState], dict[str, Any]]] = {
        "plan": lambda s: {"steps": ["multiply"], "step_index": 0, "observations": []},
        "select_tool": lambda s: {"tool": "calculator"},
        "extract_args": lambda s: {"arguments": {"expression": "17 * 23 + 4"}},
        "act": lambda s: {
            "observations": [{"step": "multiply", "tool": "calculator", "result": "395"}],
            "step_index": 1,
            "tool": None,
        },
        "answer": lambda s: {"answer": "395"},
    }
    graph: Any = StateGraph(TaskState)
    for name, update in updates.items():
        graph.add_node(name, update)
    graph.add_edge(START, "plan")
    graph.add_edge("plan", "select_tool")
    graph.add_edge("select_tool", "extract_args")
    graph.add_edge("extract_args", "act")
    graph.add_edge("act", "answer")
    return graph.compile(checkpointer=InMemorySaver())


def _timed(function: Callable[[int], None], runs: int) -> list[float]:
    gc.collect()
    times = []
    for index in range(runs):
        started = time.perf_counter()
        function(index)
        times.append((time.perf_counter() - started) * 1000)
    return times


def _offset(function: Callable[[int], None], index: int, _: int) -> None:
    function(index)


def orchestration_overhead(runs: int = 60, warmup: int = 5) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        store = TraceStore.from_url(f"sqlite:///{Path(tmp) / 'bench.db'}")
        runner = TaskRunner(
            _scripted_tiers(runs + warmup),
            default_registry(Path(tmp)),
            store,
            policy=TierPolicy(),
            checkpointer=InMemorySaver(),
        )
        bare = _bare_graph()

        def tierflow_run(_: int) -> None:
            assert runner.run("What is 17 * 23 + 4?").answer == "395"

        def bare_run(index: int) -> None:
            bare.invoke({"task": "What is 17 * 23 + 4?"}, {"configurable": {"thread_id": str(index)}})

        for index in range(warmup):
            tierflow_run(index)
            bare_run(index)
        tierflow_ms, bare_ms = [], []
        for index in range(runs):  # interleaved, so drift affects both alike
            tierflow_ms += _timed(tierflow_run, 1)
            bare_ms += _timed(partial(_offset, bare_run, 1000 + index), 1)
        store.engine.dispose()
    t, b = statistics.median(tierflow_ms), statistics.median(bare_ms)
    return {
        "runs": runs,
        "nodes_per_run": _NODES_PER_RUN,
        "tierflow_ms_per_run": t,
        "bare_langgraph_ms_per_run": b,
        "overhead_ms_per_node": (t - b) / _NODES_PER_RUN,
        "ratio": t / b,
    }


_PROMPTS = [
    "Explain in three sentences what a hash table is.",
    "Write a Python function that reverses a string.",
    "List four uses of a spreadsheet.",
    "What is the difference between TCP and UDP? Answer briefly.",
    "Describe the water cycle for a child.",
]


def slm_throughput(model_path: Path, *, n_threads: int | None = None, max_tokens: int = 96) -> dict[str, Any]:
    slm = LlamaCppModel(model_path, n_threads=n_threads)
    llama = slm.load()
    totals = {"tierflow": [0, 0.0], "raw": [0, 0.0]}
    for prompt in _PROMPTS:
        messages = [{"role": "user", "content": prompt}]
        for label in ("raw", "tierflow"):
            llama.reset()
            started = time.perf_counter()
            if label == "raw":
                response = llama.create_chat_completion(
                    messages=messages, max_tokens=max_tokens, temperature=0.0, seed=0
                )
                tokens = response["usage"]["completion_tokens"]
            else:
                tokens = slm.complete(messages, max_tokens=max_tokens).completion_tokens  # type: ignore[arg-type]
            totals[label][0] += tokens
            totals[label][1] += time.perf_counter() - started
    raw = totals["raw"][0] / totals["raw"][1]
    ours = totals["tierflow"][0] / totals["tierflow"][1]
    return {
        "model": model_path.name,
        "prompts": len(_PROMPTS),
        "max_tokens": max_tokens,
        "raw_tokens_per_s": raw,
        "tierflow_tokens_per_s": ours,
        "ratio": ours / raw,
    }


_REQUESTS = [
    "What is 45 times 12?",
    "Convert 3 miles to kilometers.",
    "What time is it in Berlin?",
    "Show me what is in notes.txt.",
    "How many words are in report.md?",
    "Which files are in the workspace?",
    "Who painted the Mona Lisa?",
    "What is the square root of 2?",
]


def _extra_tools(count: int) -> list[Tool]:
    subjects = [
        ("weather_forecast", "The weather forecast for a city.", {"city": "string"}),
        ("send_email", "Send an email to a recipient.", {"to": "string", "body": "string"}),
        ("search_web", "Search the web for a query.", {"query": "string"}),
        ("stock_price", "The latest price of a stock ticker.", {"ticker": "string"}),
        ("translate_text", "Translate text into another language.", {"text": "string", "language": "string"}),
        ("create_calendar_event", "Create a calendar event.", {"title": "string", "date": "string"}),
        ("currency_convert", "Convert money between currencies.", {"amount": "number", "to": "string"}),
        ("lookup_contact", "Find a contact's phone number.", {"name": "string"}),
        ("play_music", "Play a song or artist.", {"query": "string"}),
        ("set_timer", "Set a timer for some minutes.", {"minutes": "integer"}),
        ("book_flight", "Book a flight between two cities.", {"origin": "string", "destination": "string"}),
        ("order_food", "Order food from a restaurant.", {"restaurant": "string", "dish": "string"}),
        ("get_news", "Today's news headlines on a topic.", {"topic": "string"}),
        ("create_ticket", "Open a support ticket.", {"title": "string", "priority": "string"}),
        ("check_package", "Track a parcel by its number.", {"tracking_number": "string"}),
    ]
    return [
        Tool.from_schema(
            name,
            description,
            {
                "type": "object",
                "properties": {k: {"type": v} for k, v in params.items()},
                "required": list(params),
            },
        )
        for name, description, params in subjects[:count]
    ]


def _select_graph() -> Any:
    """select_tool alone, as a one-node graph (traced like any run, so the figure includes a
    step's tracing: a few milliseconds against the model call's seconds)."""
    graph = StateGraph(TaskState, context_schema=TaskContext)
    graph.add_node("select_tool", tiered_node(nodes.select_tool))
    graph.add_edge(START, "select_tool")
    graph.add_edge("select_tool", END)
    return graph.compile()


def selection_latency(model_path: Path, *, n_threads: int | None = None) -> dict[str, Any]:
    slm = LlamaCppModel(model_path, n_threads=n_threads)
    llama = slm.load()
    tiers = Tiers(slm, slm)
    results: dict[str, Any] = {}
    graph = _select_graph()
    with tempfile.TemporaryDirectory() as tmp:
        store = TraceStore.from_url(f"sqlite:///{Path(tmp) / 'bench.db'}")
        builtins = list(default_registry(Path(tmp)))
        for count in (5, 20):
            registry = ToolRegistry(builtins[:5] + _extra_tools(count - 5))
            assert len(registry) == count
            for cache in ("warm", "cold"):
                spec = RunSpec(policy=TierPolicy.preset("slm"), name="bench", context={"tools": registry})
                latencies = []
                execute(
                    graph,
                    {"task": _REQUESTS[0], "steps": [_REQUESTS[0]], "step_index": 0},
                    spec,
                    tiers=tiers,
                    store=store,
                )
                for request in _REQUESTS:
                    if cache == "cold":
                        llama.reset()
                    state: TaskState = {
                        "task": request,
                        "steps": [request],
                        "step_index": 0,
                        "observations": [],
                    }
                    started = time.perf_counter()
                    execute(graph, dict(state), spec, tiers=tiers, store=store)
                    latencies.append((time.perf_counter() - started) * 1000)
                results[f"{count}_tools_{cache}"] = {
                    "calls": len(latencies),
                    "p50_ms": percentile(latencies, 0.5),
                    "p95_ms": percentile(latencies, 0.95),
                }
        store.engine.dispose()
    return results


def decision_costs(models_dir: Path, decisions: int = 500, requests: int = 40) -> dict[str, Any]:
    """What the escalation score and the memory of decisions add to a tool-call step, without
    the model calls: computing the features and P(wrong), and recalling examples (embedding
    the request, querying a memory of ``decisions`` past decisions) for select_tool and
    extract_args; the memory the embedding model takes."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings
    from tierflow.agents.scoring import args_features, default_scorer, select_features, tool_line
    from tierflow.agents.signals import TokenSignals
    from tierflow.graphs.judging import tool_texts
    from tierflow.graphs.recall import Recall
    from tierflow.memory.decisions import DecisionMemory
    from tierflow.memory.embeddings import OfflineEmbeddings, embedding_model_dir

    before = _rss_bytes()
    embeddings = OfflineEmbeddings(embedding_model_dir(models_dir))
    embeddings.embed(["warm up"])
    model_mib = (_rss_bytes() - before) / 2**20
    tools = _extra_tools(12)[:5]
    names = [tool.name for tool in tools]
    client = chromadb.EphemeralClient(settings=ChromaSettings(anonymized_telemetry=False))
    memory = DecisionMemory(client, embeddings, collection=f"bench{time.time_ns()}")
    recall = Recall(memory)
    for index in range(decisions):
        tool = tools[index % len(tools)]
        city = f"city number {index}"
        recall.remember(
            f"{tool.description} for {city}, please", names, tool.name, {"city": city}, "llm", None
        )
    scorer = default_scorer()
    signals = TokenSignals(tokens=6, min_logprob=-2.0, mean_logprob=-0.4, forced_tokens=0)
    probabilities = {name: 1 / (len(names) + 1) for name in [*names, "none"]}
    recall_ms, score_ms = [], []
    for index in range(requests):
        request = f"Could you get me the {tools[index % len(tools)].description.lower()} for town {index}?"
        started = time.perf_counter()
        recall.for_choice(request, tools)
        recall.for_call(request, tools[index % len(tools)])
        recall_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        texts = tool_texts(tools)
        similarities = memory.relevance(request, [tool_line(text) for text in texts])
        chosen = select_features(request, texts, names[0], probabilities, similarities)
        scorer.nodes["select_tool"].p_wrong(chosen)
        row = args_features(request, texts[0], {"city": "town"}, signals, chosen)
        scorer.nodes["extract_args"].p_wrong(row)
        score_ms.append((time.perf_counter() - started) * 1000)
    return {
        "decisions_in_memory": decisions,
        "recall_ms_p50": percentile(recall_ms, 0.5),
        "recall_ms_p95": percentile(recall_ms, 0.95),
        "score_ms_p50": percentile(score_ms, 0.5),
        "embedding_model_mib": model_mib,
    }


def signal_costs(repeats: int = 300) -> dict[str, Any]:
    """What judging a kit step's SLM output adds, without the model call: its signals
    (``step_features``) and P(wrong), per kind of step, on inputs of a realistic size (a
    choice among 5 options, an object of 4 values, a 120-word summary of a 900-word text)."""
    from tierflow.agents.judging import FEATURES, StepView, fit_logistic, step_features
    from tierflow.agents.signals import TokenSignals
    from tierflow.records import ChoiceProbabilities

    words = [f"word{n % 97}" for n in range(900)]
    source = " ".join(words[:450]) + " In May 2024 we sold 1,250 units to Acme Corp. " + " ".join(words[450:])
    summary = "Sales rose to 1,250 units in May 2024, mostly to Acme Corp. " + " ".join(words[:110])
    options = ("bug", "outage", "billing", "feature_request", "spam")
    probabilities = ChoiceProbabilities(
        dict(zip(options, (0.6, 0.2, 0.1, 0.06, 0.04), strict=True)), "bug", 0.0
    )
    signals = TokenSignals(tokens=12, min_logprob=-2.1, mean_logprob=-0.3, forced_tokens=1)
    cases: dict[str, tuple[StepView, Any, dict[str, Any]]] = {
        "choose": (StepView("choose", source, options), "bug", {"probabilities": probabilities}),
        "extract": (
            StepView("extract", source),
            {"customer": "Acme Corp", "units": 1250, "month": "May", "year": 2024},
            {"signals": signals},
        ),
        "text": (StepView("text", source), summary, {"signals": signals, "completion_tokens": 160}),
    }
    timings: dict[str, float] = {}
    for kind, (view, value, extra) in cases.items():
        row = step_features(view, value, str(value), max_tokens=256, **extra)
        model = fit_logistic([row, {**row, FEATURES[view.kind][0]: 0.0}], [True, False], FEATURES[view.kind])
        elapsed = []
        for _ in range(repeats):
            started = time.perf_counter()
            model.p_wrong(step_features(view, value, str(value), max_tokens=256, **extra))
            elapsed.append((time.perf_counter() - started) * 1000)
        timings[f"{kind}_ms_p50"] = percentile(elapsed, 0.5) or 0.0
    return timings


def past_output_costs(models_dir: Path, stored: int = 500, lookups: int = 40) -> dict[str, Any]:
    """What the nearest-verified-output signal adds to a choice or extraction: finding the
    node's nearest verified output among ``stored`` (embedding the input, a filtered query)
    and comparing with it; and keeping a newly verified output."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings
    from tierflow.agents.judging import past_features
    from tierflow.memory.decisions import DecisionMemory, OutputMemory
    from tierflow.memory.embeddings import OfflineEmbeddings, embedding_model_dir

    embeddings = OfflineEmbeddings(embedding_model_dir(models_dir))
    embeddings.embed(["warm up"])
    client = chromadb.EphemeralClient(settings=ChromaSettings(anonymized_telemetry=False))
    outputs = OutputMemory(DecisionMemory(client, embeddings, collection=f"bench{time.time_ns()}"))
    add_ms, lookup_ms = [], []
    for index in range(stored):
        started = time.perf_counter()
        outputs.add("bench", "classify", f"Report {index}: the export to CSV fails", {"label": "bug"}, "llm")
        add_ms.append((time.perf_counter() - started) * 1000)
    for index in range(lookups):
        started = time.perf_counter()
        found = outputs.nearest("bench", "classify", f"Since update {index} the CSV export is empty")
        past_features("choose", "bug", (found.similarity, found.output["label"]) if found else None)
        lookup_ms.append((time.perf_counter() - started) * 1000)
    return {
        "stored": stored,
        "lookup_ms_p50": percentile(lookup_ms, 0.5) or 0.0,
        "add_ms_p50": percentile(add_ms, 0.5) or 0.0,
    }


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


_MEMORY_SCRIPT = """
import json, sys
from pathlib import Path
from tierflow.app import App
from tierflow.settings import load_settings

def hwm(pid="self"):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None

with App(load_settings()) as app:
    result = app.runner.run("What is 17 * 23 + 4?")
    server = getattr(app.tiers.llm, "server", None)
    pid = server.pid if server is not None else None
    print(json.dumps({"status": result.status, "tierflow_bytes": hwm(),
                      "llm_server_bytes": hwm(pid) if pid else None}))
"""


def peak_memory() -> dict[str, Any]:
    import json
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT], capture_output=True, text=True, timeout=900, check=False
    )
    if done.returncode != 0:
        return {"error": done.stderr.strip()[-500:]}
    data: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "task": "What is 17 * 23 + 4?",
        "status": data["status"],
        "tierflow_mib": data["tierflow_bytes"] / 2**20,
        "llm_server_mib": data["llm_server_bytes"] / 2**20 if data["llm_server_bytes"] else None,
    }


def bench_markdown(data: dict[str, Any]) -> str:
    rows = bench_rows(data)
    env = data["environment"]
    return (
        "# Benchmarks\n\n"
        f"{env['machine']['cores']} cores ({env['machine']['cpu']}), models {env['models'].get('slm')} / "
        f"{env['models'].get('llm')}, commit {(env['git_commit'] or '?')[:10]}, {env['created_at']}.\n\n"
        + markdown_table(["measure", "value"], rows)
        + ("\n" + load_markdown(data["load"]) if data.get("load") else "")
    )
