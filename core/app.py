"""Everything an entry point needs, built once from ``Settings``: tiers, tools, traces, runner.

``App`` is what the CLI, the console and batch jobs hold. Building it does no heavy work:
the SLM loads on first use, the embedded LLM server starts on the first LLM call, and
``close()`` (or leaving the ``with`` block) stops that server.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import SecretStr
from tierflow.agents.adapters import AdapterStore, adapted_name
from tierflow.agents.calibration import StepScorers, scorer_file, shipped_priors
from tierflow.agents.catalog import CATALOG, resolve_model
from tierflow.agents.hub import parse_hub_spec
from tierflow.agents.llm import OpenAIChatModel, ResponseFormat, bounded_client
from tierflow.agents.policy import TierPolicy
from tierflow.agents.protocol import ChatModel, Tier
from tierflow.agents.scoring import EscalationScorer
from tierflow.agents.server import TOKENIZER, EmbeddedLLM, EmbeddedServer
from tierflow.agents.slm import LlamaCppModel
from tierflow.agents.tiers import Deferred, Tiers, built
from tierflow.errors import ConfigError, TierflowError
from tierflow.graphs.introspect import graph_key
from tierflow.graphs.runner import TASK_GRAPH, TaskRunner
from tierflow.graphs.running import GraphResult
from tierflow.graphs.running import run_graph as graph_run
from tierflow.memory.traces import TraceStore
from tierflow.memory.traces.telemetry import RunTelemetry
from tierflow.optional import installed, require
from tierflow.records import OnProgress, TraceListener
from tierflow.secrets import scrub
from tierflow.settings import Settings, load_settings
from tierflow.tools.builtins import default_registry
from tierflow.tools.registry import ToolRegistry

if TYPE_CHECKING:
    from tierflow.graphs.recall import Recall
    from tierflow.memory.decisions import OutputMemory
    from tierflow.memory.documents import DocumentMemory
    from tierflow.memory.embeddings import OfflineEmbeddings, Relevance

__all__ = [
    "App",
    "run_graph",
    "build_slm",
    "build_llm",
    "build_tiers",
    "trace_listeners",
    "slm_adapter",
    "slm_name",
    "adapter_store",
]

logger = logging.getLogger("tierflow")


def _model_name(spec: str) -> str:
    """A model's name in traces: the catalog name, or the GGUF file's name (a Hub spec's
    revision left out)."""
    if spec in CATALOG:
        return spec
    hub = parse_hub_spec(spec)
    path = hub.filename if hub is not None else spec
    return path.rsplit("/", 1)[-1].removesuffix(".gguf")


def llm_name(settings: Settings) -> str:
    """The LLM tier's model name: the endpoint's model, else the embedded server's alias
    (``llm`` for an endpoint that names none, which ``build_llm`` refuses)."""
    if settings.llm_model:
        return settings.llm_model
    return "llm" if settings.llm_base_url else _model_name(settings.embedded_llm_model)


def model_file(settings: Settings, spec: str, setting: str, on_progress: OnProgress | None) -> Path:
    return resolve_model(
        spec,
        settings.resolved_models_dir(),
        auto_pull=settings.auto_pull,
        on_progress=on_progress,
        setting=setting,
    )


def build_slm(settings: Settings, on_progress: OnProgress | None = None) -> ChatModel:
    """The SLM tier: llama.cpp in process, or the OpenAI-compatible server ``slm_base_url``
    names (which the ``slm`` shorthand also fills)."""
    if settings.slm_base_url:
        return served_model(
            settings,
            "slm",
            settings.slm_base_url,
            settings.slm_api_key,
            settings.slm_model,
            timeout=settings.slm_timeout,
            response_format=settings.slm_response_format,
        )
    require("llama_cpp", purpose="the local SLM tier")
    path = model_file(settings, settings.slm_model, "TIERFLOW_SLM_MODEL", on_progress)
    adapter = slm_adapter(settings, path)
    return LlamaCppModel(
        path,
        name=slm_name(settings, adapter),
        n_ctx=settings.slm_n_ctx,
        n_threads=settings.slm_threads,
        seed=settings.seed,
        lora_path=adapter[1] if adapter else None,
        take_turns=settings.local_models_take_turns,
    )


def slm_name(settings: Settings, adapter: tuple[str, Path] | None = None) -> str:
    """The SLM tier's model name, with its adapter (``qwen2.5-coder-0.5b+lora-…``)."""
    if settings.slm_base_url:
        return settings.slm_model  # the model's name at the server
    return adapted_name(_model_name(settings.slm_model), adapter[0] if adapter else None)


def slm_adapter(settings: Settings, base: Path | None = None) -> tuple[str, Path] | None:
    """The adapter the SLM loads (its name and GGUF file), or None for the base SLM.

    ``auto`` takes the active adapter of ``<data dir>/adapters`` if it was trained on this SLM
    (another SLM's adapter is skipped with a warning); a name takes that adapter; a path, that
    GGUF LoRA file."""
    choice = settings.slm_adapter.strip()
    if choice in ("none", ""):
        return None
    if settings.slm_base_url:  # the server holds the model: an adapter is the server's to load
        if choice != "auto":
            _warn_once(
                f"TIERFLOW_SLM_ADAPTER={choice} is not applied to the SLM server at "
                f"{scrub(settings.slm_base_url)}: start that server with the adapter instead"
            )
        return None
    if choice.endswith(".gguf") or "/" in choice:
        path = Path(choice).expanduser()
        return path.stem, path
    store = adapter_store(settings)
    name = store.active() if choice == "auto" else choice
    if name is None:
        return None
    try:
        card = store.card(name)
    except TierflowError as exc:
        if choice != "auto":
            raise
        _warn_once(f"the active adapter cannot be used ({exc.message}); the base SLM serves")
        return None
    size = base.stat().st_size if base is not None and base.is_file() else None
    if card.base_model != settings.slm_model or (size is not None and size != card.base_file_size):
        message = (
            f"the adapter {name!r} was trained on {card.base_model}, not on the configured SLM "
            f"{settings.slm_model}"
        )
        if choice != "auto":
            raise ConfigError(message, hint="Set TIERFLOW_SLM_ADAPTER=none, or train one for this SLM.")
        _warn_once(f"{message}; the base SLM serves (`tierflow adapters revert` to stop using it)")
        return None
    return name, store.file(name)


def adapter_store(settings: Settings) -> AdapterStore:
    """The LoRA adapters ``tierflow learn`` trained, in the data directory."""
    return AdapterStore(settings.resolved_data_dir() / "adapters")


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        logger.warning(message)


def build_tiers(settings: Settings, on_progress: OnProgress | None = None) -> Tiers:
    """Both tiers, each built on its first use: a run on one tier never resolves or downloads
    the other's model file (``--policy llm`` needs no SLM file)."""
    try:
        slm = slm_name(settings, slm_adapter(settings))
    except TierflowError:  # a broken adapter setting fails when the SLM is built, not before
        slm = slm_name(settings)
    return Tiers(
        slm=Deferred("slm", slm, lambda: build_slm(settings, on_progress)),
        llm=Deferred("llm", llm_name(settings), lambda: build_llm(settings, on_progress)),
    )


def build_llm(settings: Settings, on_progress: OnProgress | None = None) -> ChatModel:
    """The LLM tier: the configured endpoint (``llm_base_url``, which the ``llm`` shorthand and
    OPENAI_BASE_URL also fill), else the embedded llama.cpp server, started on first use."""
    if settings.llm_base_url:
        return served_model(
            settings,
            "llm",
            settings.llm_base_url,
            settings.llm_api_key,
            settings.llm_model,
            timeout=settings.llm_timeout,
            response_format=settings.llm_response_format,
        )
    require(
        "llama_cpp",
        "uvicorn",
        purpose="the embedded LLM server (used when no TIERFLOW_LLM or TIERFLOW_LLM_BASE_URL is set)",
    )
    path = model_file(settings, settings.embedded_llm_model, "TIERFLOW_EMBEDDED_LLM_MODEL", on_progress)
    server = EmbeddedServer(
        path,
        alias=llm_name(settings),
        log_path=settings.resolved_data_dir() / "logs" / "llm-server.log",
        n_ctx=settings.embedded_llm_n_ctx,
        n_threads=settings.embedded_llm_threads,
        startup_timeout=settings.embedded_llm_startup_timeout,
    )
    return EmbeddedLLM(
        server, timeout=settings.llm_timeout, seed=settings.seed, take_turns=settings.local_models_take_turns
    )


def served_model(
    settings: Settings,
    tier: Tier,
    base_url: str,
    api_key: SecretStr | None,
    model: str | None,
    *,
    timeout: float,
    response_format: ResponseFormat,
) -> OpenAIChatModel:
    """A tier on an OpenAI-compatible server: the LLM's endpoint, or the SLM's server (which
    is asked for log-probabilities, the escalation signals, and is bounded by ``slm_n_ctx``)."""
    name = tier.upper()
    if not model:
        raise ConfigError(
            f"no model is named for the {name} at {scrub(base_url)}",
            hint=f"Set TIERFLOW_{name}_MODEL to a model the endpoint serves, or name both at once, "
            + (
                "e.g. TIERFLOW_LLM=openai:gpt-4o-mini"
                if tier == "llm"
                else "e.g. TIERFLOW_SLM=llamacpp:qwen2.5-coder-0.5b"
            )
            + " (providers: openai, vllm, ollama, llamacpp).",
        )
    key = api_key.get_secret_value() if api_key else ""
    if not key and urlsplit(base_url).hostname == "api.openai.com":
        raise ConfigError(
            "no API key for OpenAI",
            hint=f"Set OPENAI_API_KEY (or TIERFLOW_{name}_API_KEY) to your OpenAI API key.",
        )
    client = bounded_client(base_url, key or "unused", timeout=timeout, max_retries=settings.llm_max_retries)
    if tier == "llm":
        return OpenAIChatModel(
            client,
            model,
            response_format=response_format,
            token_parameter=settings.llm_token_parameter,
            temperature=settings.llm_temperature,
            native_tools=settings.llm_native_tools,
            seed=settings.seed,
            # llama-cpp-python's server (the embedded one a batch job's workers share) counts tokens
            tokenizer=TOKENIZER if response_format == "llamacpp" else None,
        )
    return OpenAIChatModel(
        client,
        model,
        response_format=response_format,
        seed=settings.seed,
        tier="slm",
        top_logprobs=settings.slm_top_logprobs or None,
        n_ctx=settings.slm_n_ctx,
    )


def trace_listeners(environ: Mapping[str, str] | None = None) -> list[TraceListener]:
    """Who else sees each run's trace: the OpenTelemetry export, when the environment names
    an OTLP endpoint (``OTEL_EXPORTER_OTLP_ENDPOINT``, see ``tierflow.memory.traces.telemetry``)."""
    telemetry = RunTelemetry.from_env(environ)
    return [telemetry] if telemetry is not None else []


def load_embeddings(settings: Settings, on_progress: OnProgress | None = None) -> OfflineEmbeddings:
    """The offline sentence embeddings in the settings' models folder (pulled first when
    missing and ``auto_pull`` is on); a clear error when the ``memory`` extra is missing."""
    require("chromadb", "onnxruntime", "tokenizers", purpose="the offline embeddings of the memory")
    from tierflow.memory.embeddings import load_embeddings as load

    return load(settings.resolved_models_dir(), auto_pull=settings.auto_pull, on_progress=on_progress)


def open_recall(
    settings: Settings,
    on_progress: OnProgress | None = None,
    *,
    learn: bool | None = None,
    embeddings: OfflineEmbeddings | None = None,
) -> Recall:
    """The decision memory in ``settings.resolved_memory_dir()``."""
    from tierflow.graphs.recall import Recall
    from tierflow.memory.decisions import DecisionMemory

    memory = DecisionMemory.open(
        settings.resolved_memory_dir() / "decisions", embeddings or load_embeddings(settings, on_progress)
    )
    return Recall(
        memory,
        learn=settings.learn if learn is None else learn,
        examples=settings.memory_examples,
        plan_reuse_similarity=settings.plan_reuse_similarity,
    )


class App:
    """Tiers, tools, trace store and task runner built from ``Settings``; models load on
    first use and ``close()`` (or leaving ``with App(...)``) stops the embedded server."""

    def __init__(
        self,
        settings: Settings,
        *,
        on_progress: OnProgress | None = None,
        tiers: Tiers | None = None,
        tools: ToolRegistry | None = None,
        store: TraceStore | None = None,
        checkpointer: Any | None = None,
    ) -> None:
        """Parts given here are used as they are (scripted tiers in tests, a shared store);
        the others are built from ``settings`` on first use."""
        self.settings = settings
        self._on_progress = on_progress
        given = {"tiers": tiers, "tools": tools, "store": store, "checkpointer": checkpointer}
        self._given = {name: part for name, part in given.items() if part is not None}
        self._relevance: Relevance | None = None
        self._shared_slm: EmbeddedServer | None = None
        self.__dict__.update(self._given)

    @property
    def builds_tiers(self) -> bool:
        """Whether this app builds its tiers from its settings (none were given to it)."""
        return "tiers" not in self._given

    @cached_property
    def store(self) -> TraceStore:
        url, secrets = self.settings.resolved_database_url(), self.settings.secrets()
        return TraceStore.from_url(url, secrets=secrets, listeners=trace_listeners())

    @cached_property
    def tools(self) -> ToolRegistry:
        """The built-in tools, and ``search_memory`` once documents were added to the memory."""
        registry = default_registry(self.settings.resolved_workspace())
        if self.settings.documents_dir().is_dir() and installed("chromadb"):
            from tierflow.graphs.citing import search_memory_tool

            registry.register(search_memory_tool(lambda: self.documents))
        return registry

    @cached_property
    def tiers(self) -> Tiers:
        """Each tier's model is built on its first use: a run on one tier never resolves or
        downloads the other's model file."""
        return build_tiers(self.settings, self._on_progress)

    @cached_property
    def checkpointer(self) -> Any:
        from tierflow.memory.checkpoints import open_checkpointer

        return open_checkpointer(self.settings.checkpoint_path())

    @cached_property
    def embeddings(self) -> OfflineEmbeddings:
        return load_embeddings(self.settings, self._on_progress)

    @cached_property
    def documents(self) -> DocumentMemory:
        """The users' documents in the long-term memory (``tierflow memory add``)."""
        from tierflow.memory.documents import DocumentMemory as Memory

        return Memory.open(self.settings.documents_dir(), self.embeddings)

    @cached_property
    def recall(self) -> Recall | None:
        """The memory of verified decisions as task runs use it (None with ``memory`` off, or
        without the ``memory`` extra installed)."""
        if not self.settings.memory:
            return None
        if not installed("chromadb", "onnxruntime", "tokenizers"):
            logger.warning(
                "the memory of verified decisions is off: it needs chromadb and onnxruntime "
                "(pip install 'tierflow[memory]'), or set TIERFLOW_MEMORY=false"
            )
            return None
        return open_recall(self.settings, self._on_progress, embeddings=self.embeddings)

    @cached_property
    def outputs(self) -> OutputMemory | None:
        """The memory of verified step outputs, in the decision memory's store (None with
        ``memory`` or ``learn`` off); opened the first time a step asks for it."""
        recall = self.recall
        if recall is None or not recall.learn:
            return None
        from tierflow.memory.decisions import OutputMemory as Outputs

        return Outputs(recall.memory)

    def relevance(self, request: str, texts: Sequence[str]) -> list[float]:
        """A request's embedding similarity to each text (the escalation score reads it of
        the tools); the embedding model loads on first use."""
        if self._relevance is None:
            from tierflow.memory.embeddings import Relevance

            self._relevance = Relevance(self.embeddings)
        return self._relevance(request, texts)

    @cached_property
    def scorer(self) -> EscalationScorer | None:
        """The escalation score's scorer from ``escalation_scorer`` (``None``: the shipped one)."""
        path = self.settings.escalation_scorer
        return EscalationScorer.load(path.expanduser()) if path is not None else None

    @cached_property
    def runner(self) -> TaskRunner:
        return TaskRunner(
            self.tiers,
            self.tools,
            self.store,
            policy=self.settings.policy,
            checkpointer=self.checkpointer,
            max_steps=self.settings.max_steps,
            summarize_over_chars=self.settings.summarize_over_chars,
            tool_limits=self.settings.tool_limits(),
            settings_snapshot=self.settings.masked(),
            prices=self.settings.prices(),
            recall=self.recall,
            relevance=self.relevance,
            scorer=self.scorer,
            # calibrated for the task graph's own nodes: the shipped task score serves the rest
            scorers=lambda: StepScorers.load(scorer_file(self.settings.scorers_dir(), TASK_GRAPH)),
            outputs=lambda: self.outputs,
        )

    def run_graph(
        self,
        graph: Any,
        input: Mapping[str, Any],
        *,
        policy: TierPolicy | str | None = None,
        context: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> GraphResult:
        """``tierflow.run_graph`` on this app's tiers, store and settings (the models stay
        loaded between runs); the run's steps search this app's document memory and the
        escalation score reads its embeddings."""
        services = {
            "documents": lambda: self.documents,
            "relevance": self.relevance,
            "scorers": self.step_scorers(graph_key(graph, options.get("name") or "graph")),
            "outputs": lambda: self.outputs,
            "shadow_rate": self.settings.shadow_rate,
            "shadow_rates": self.settings.shadow_rates,
        }
        return graph_run(
            graph,
            input,
            tiers=self.tiers,
            store=self.store,
            policy=self.settings.policy.as_preset(policy)
            if isinstance(policy, str)
            else policy or self.settings.policy,
            prices=self.settings.prices(),
            snapshot=self.settings.masked(),
            context={**services, **(context or {})},
            **options,
        )

    def step_scorers(self, graph: str) -> StepScorers:
        """The step scorers calibrated for the graph named ``graph`` (``tierflow calibrate``;
        a graph's name is its ``compile(name=...)``, else the name its runs are given), read
        afresh for each run so that a new calibration applies at once; with the shipped
        priors for steps they do not cover (setting ``step_priors``)."""
        priors = shipped_priors() if self.settings.step_priors else {}
        return StepScorers.load(scorer_file(self.settings.scorers_dir(), graph), priors)

    def shared_slm_settings(self, *, signals: bool = True) -> Settings:
        """These settings with the SLM on one llama.cpp server on this machine (started now,
        stopped by ``close``), which worker processes share instead of loading a copy each
        (``tierflow summarize --shared-slm``); settings that already name an SLM server are
        kept. ``signals``: the server returns log-probabilities, the SLM's escalation signals,
        which llama-cpp-python's server pays for on every prompt token (twice the time of a
        900-token prompt on 2 cores): a job that never escalates goes without."""
        settings = self.settings
        if settings.slm_base_url:
            return settings
        if self._shared_slm is None:
            require("llama_cpp", "uvicorn", purpose="the shared SLM server")
            path = model_file(settings, settings.slm_model, "TIERFLOW_SLM_MODEL", None)
            adapter = slm_adapter(settings, path)
            self._shared_slm = EmbeddedServer(
                path,
                alias=slm_name(settings, adapter),
                log_path=settings.resolved_data_dir() / "logs" / "slm-server.log",
                n_ctx=settings.slm_n_ctx,
                n_threads=settings.slm_threads,
                startup_timeout=settings.embedded_llm_startup_timeout,
                logits_all=signals and settings.slm_top_logprobs > 0,
                lora_path=adapter[1] if adapter else None,
                role="SLM",
            )
        server = self._shared_slm
        server.start()
        update = {
            "slm_base_url": server.base_url,
            "slm_model": server.alias,
            "slm_response_format": "llamacpp",
            "slm_top_logprobs": settings.slm_top_logprobs if server.logits_all else 0,
        }
        return settings.model_copy(update=update)

    def running_servers(self) -> list[EmbeddedServer]:
        """The llama.cpp servers of this app's models that run now: the embedded LLM's and the
        shared SLM's. A long batch job restarts them (``tierflow.batch.backends.Recycle``)."""
        tiers = self.__dict__.get("tiers")
        llm = built(tiers.llm) if tiers is not None else None
        servers = [self._shared_slm, llm.server if isinstance(llm, EmbeddedLLM) else None]
        return [server for server in servers if server is not None and server.running]

    def close(self) -> None:
        """Stop what this app started (the embedded server, the shared SLM server, the
        checkpoint database); parts given to it belong to the caller and are left as they are."""
        if self._shared_slm is not None:
            self._shared_slm.stop()
        tiers = self.__dict__.get("tiers")
        llm = built(tiers.llm) if tiers is not None else None
        if "tiers" not in self._given and isinstance(llm, EmbeddedLLM):
            llm.close()
        checkpointer = self.__dict__.get("checkpointer")
        if "checkpointer" not in self._given and checkpointer is not None:
            checkpointer.conn.close()

    def __enter__(self) -> App:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def run_graph(
    graph: Any,
    input: Mapping[str, Any],
    *,
    settings: Settings | None = None,
    tiers: Tiers | None = None,
    store: TraceStore | None = None,
    **options: Any,
) -> GraphResult:
    """Run compiled ``graph`` on ``input`` as a traced tierflow run, with nothing to set up.

    ``settings`` default to ``load_settings()``; ``tiers`` and ``store`` default to the
    ones the settings describe (pass your own to share them between runs, or scripted ones
    in tests); models load on first use and an embedded LLM server this starts is stopped
    before it returns. ``options`` are those of ``tierflow.graphs.running.run_graph``:
    ``policy`` (default: the settings'), ``budget``, ``local_only``, ``redact``, ``name``,
    ``task``, ``context``, ``config``, ``on_event``, ``resume`` and ``cancel``.
    """
    with App(settings or load_settings(), tiers=tiers, store=store) as app:
        return app.run_graph(graph, input, **options)
