"""The small local tier: llama-cpp-python in process, one model loaded once, calls serialised.

A llama.cpp context is not thread-safe, so every call goes through one lock (two Streamlit
tabs or two threads of a batch job share the model safely). Structured calls pass a grammar
built from the JSON schema by ``tierflow.agents.grammar`` rather than ``response_format``,
whose failed conversions fall back to unconstrained JSON without a word.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tierflow.agents.confidence import choice_field, choice_probabilities, rechoose
from tierflow.agents.cores import turn
from tierflow.agents.grammar import build_grammar, check_grammar
from tierflow.agents.protocol import ChoiceProbabilities, Completion, Message, Tier
from tierflow.agents.signals import TokenTrace, text_signals, token_signals
from tierflow.agents.watch import CURRENT_WATCH, GenerationWatch
from tierflow.errors import ContextOverflowError, ModelFileError, ModelNotFoundError

__all__ = ["LlamaCppModel", "WatchStop", "check_gguf"]

_GGUF_MAGIC = b"GGUF"


def check_gguf(path: Path) -> None:
    """Raise a clear error when ``path`` is missing or not a GGUF file."""
    if not path.is_file():
        raise ModelNotFoundError(
            f"model file {path} does not exist",
            hint="Check the path, or use a catalog name (`tierflow models list`).",
        )
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic != _GGUF_MAGIC:
        raise ModelFileError(
            f"{path} is not a GGUF model file (it starts with {magic!r})",
            hint="Point the setting at a .gguf file, or re-download with "
            "`tierflow models pull NAME --force`.",
        )


class WatchStop:
    """A llama-cpp logits processor that ends the reply (forces end-of-generation) once the
    watch finds a reason to stop the text generated so far."""

    def __init__(self, llama: Any, watch: GenerationWatch) -> None:
        self.llama, self.watch = llama, watch
        self.prompt_tokens: int | None = None  # the input at the first token is the prompt

    def __call__(self, input_ids: Any, logits: Any) -> Any:
        if self.prompt_tokens is None:
            self.prompt_tokens = len(input_ids)
        generated = [int(token) for token in input_ids[self.prompt_tokens :]]
        if generated or self.watch.stopped:
            text = self.llama.detokenize(generated).decode("utf-8", errors="ignore")
            if self.watch.check(text):
                end = logits.copy()
                end[:] = -float("inf")
                end[self.llama.token_eos()] = 0.0
                return end
        return logits


class LlamaCppModel:
    """A ``ChatModel`` over a ``llama_cpp.Llama``, loaded on first use."""

    tier: Tier = "slm"

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        name: str | None = None,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        seed: int = 0,
        lora_path: Path | None = None,
        llama: Any | None = None,
        take_turns: bool = True,
    ) -> None:
        """``take_turns``: compute only while no other local model of this process does
        (``tierflow.agents.cores``)."""
        if model_path is None and llama is None:
            raise ValueError("give model_path or a ready llama")
        self.model_path = model_path
        self.name = name or (model_path.stem if model_path else "llama")
        self._n_ctx = n_ctx
        self._n_threads = n_threads or os.cpu_count() or 1
        self._seed = seed
        self.lora_path = lora_path  # a GGUF LoRA adapter applied over the model
        self._llama = llama
        self._lock = threading.Lock()
        self._take_turns = take_turns
        self._grammars_checked: set[str] = set()  # the grammars llama.cpp parsed for this model

    @property
    def n_ctx(self) -> int:
        """The context size in tokens: prompt and reply together."""
        return self._n_ctx

    def count_tokens(self, text: str) -> int:
        """How many tokens ``text`` is for this model (loads it)."""
        with self._lock:
            llama = self._load_locked()
            return len(llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def load(self) -> Any:
        """Load the model now (idempotent); raises ``ModelFileError`` if llama.cpp refuses it."""
        with self._lock:
            return self._load_locked()

    def _load_locked(self) -> Any:
        if self._llama is None:
            assert self.model_path is not None
            check_gguf(self.model_path)
            if self.lora_path is not None:
                check_gguf(self.lora_path)
            from llama_cpp import Llama

            try:
                self._llama = Llama(
                    model_path=str(self.model_path),
                    lora_path=str(self.lora_path) if self.lora_path is not None else None,
                    n_ctx=self._n_ctx,
                    n_threads=self._n_threads,
                    seed=self._seed,
                    logits_all=False,
                    verbose=False,
                )
            except ValueError as exc:
                adapter = f" with the adapter {self.lora_path}" if self.lora_path is not None else ""
                raise ModelFileError(
                    f"llama.cpp could not load {self.model_path}{adapter}: {exc}",
                    hint="The file may be truncated or corrupt: re-download it with "
                    "`tierflow models pull NAME --force`, or choose another GGUF.",
                ) from exc
        return self._llama

    def complete(
        self,
        messages: Sequence[Message],
        *,
        schema: dict[str, Any] | None = None,
        max_tokens: int,
    ) -> Completion:
        grammar = build_grammar(schema) if schema is not None else None
        with self._lock:
            llama = self._load_locked()
            if grammar is not None and grammar._grammar not in self._grammars_checked:
                check_grammar(llama._model.vocab, grammar)  # once per grammar, not on every call
                self._grammars_checked.add(grammar._grammar)
        with self._lock, turn(self._take_turns):
            from llama_cpp import LogitsProcessorList

            field = choice_field(schema)
            # how sure the model was of what it wrote: a value's tokens, or a free text's
            trace = TokenTrace() if field is None else None
            processors: list[Any] = [trace] if trace is not None else []
            watch = CURRENT_WATCH.get() if grammar is None else None
            if watch is not None:  # a free text, stopped early when it goes wrong
                processors.append(WatchStop(llama, watch))
            started = time.perf_counter()
            try:
                response = llama.create_chat_completion(
                    messages=list(messages),
                    grammar=grammar,
                    max_tokens=max_tokens,
                    temperature=0.0,
                    seed=self._seed,
                    logits_processor=LogitsProcessorList(processors) if processors else None,
                )
            except ValueError as exc:
                if "exceed context window" not in str(exc):
                    raise
                raise ContextOverflowError(
                    f"the prompt does not fit the SLM's context ({exc})",
                    hint="Tiered steps send it to the LLM; otherwise shorten the input or raise "
                    "TIERFLOW_SLM_N_CTX (the model's own limit permitting).",
                ) from None
            latency_ms = (time.perf_counter() - started) * 1000
            stopped = watch.stopped if watch is not None else None
            choice = response["choices"][0]
            usage = response.get("usage") or {}
            text = choice["message"].get("content") or ""
            scores: ChoiceProbabilities | None = None
            signals = None
            if trace is not None and grammar is not None:  # how sure of each value it wrote?
                signals = token_signals(trace, lambda token: llama.detokenize([token]), text)
            elif trace is not None:
                signals = text_signals(trace)
            if field is not None:  # a choice among fixed options: how sure was the model?
                scoring = time.perf_counter()
                probabilities = choice_probabilities(llama, int(usage.get("prompt_tokens", 0)), text, field)
                if probabilities is not None:
                    text, greedy = rechoose(text, field, probabilities)
                    elapsed_ms = (time.perf_counter() - scoring) * 1000
                    scores = ChoiceProbabilities(probabilities, greedy, elapsed_ms)
        return Completion(
            text=text,
            model=self.name,
            tier=self.tier,
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            latency_ms=latency_ms,
            finish_reason="stopped" if stopped else choice.get("finish_reason") or "stop",
            choice_probabilities=scores,
            signals=signals,
            stopped=stopped,
        )
