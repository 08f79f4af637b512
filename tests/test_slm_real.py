"""The SLM tier on a real GGUF through llama-cpp-python (temperature 0, fixed seed)."""

import json
import threading
from pathlib import Path

import pytest
from tierflow.agents.grammar import build_grammar, grammar_schema
from tierflow.agents.slm import LlamaCppModel
from tierflow.errors import ModelFileError, ModelNotFoundError, SchemaError

pytestmark = pytest.mark.real_slm


@pytest.fixture(scope="module")
def slm(slm_path: Path) -> LlamaCppModel:
    model = LlamaCppModel(slm_path, name="qwen2.5-coder-0.5b", n_ctx=2048, n_threads=2)
    model.load()
    return model


def ask(text: str) -> list:
    return [{"role": "user", "content": text}]


def test_grammar_really_constrains_the_choice(slm: LlamaCppModel) -> None:
    schema = {
        "type": "object",
        "properties": {"tool": {"type": "string", "enum": ["alpha", "beta"]}},
        "required": ["tool"],
    }
    # The prompt pushes for an answer outside the enum; the grammar must not allow it.
    reply = slm.complete(ask('Reply with {"tool": "calculator"} exactly.'), schema=schema, max_tokens=20)
    assert json.loads(reply.text)["tool"] in {"alpha", "beta"}
    assert reply.tier == "slm" and reply.prompt_tokens > 0 and reply.completion_tokens > 0


def test_choices_come_with_a_distribution_over_the_options(slm: LlamaCppModel) -> None:
    options = ["calculator", "unit_convert", "read_file", "none"]
    schema = {
        "type": "object",
        "properties": {"tool": {"type": "string", "enum": options}},
        "required": ["tool"],
    }
    system = {
        "role": "system",
        "content": "Pick the tool for the request. calculator: arithmetic. unit_convert: convert units. "
        'read_file: read a file. none: no tool fits. Reply {"tool": "..."}.',
    }
    sure = slm.complete([system, *ask("What is 1234 * 5678?")], schema=schema, max_tokens=20)
    assert sure.choice_probabilities is not None
    probabilities = sure.choice_probabilities.probabilities
    assert set(probabilities) == set(options) and sum(probabilities.values()) == pytest.approx(1.0)
    chosen = json.loads(sure.text)["tool"]
    assert chosen == max(probabilities, key=probabilities.get)  # the reply is the most probable option
    assert sure.confidence == probabilities[chosen] and chosen == "calculator"
    # Scoring leaves the KV cache usable: the same call again gives the same choice. (llama.cpp's
    # numbers shift with how the prompt is split into batches, hence the tolerance: 0.035 at
    # most on the AVX2 build `make setup` makes, against 0.03 seen on a native build.)
    again = slm.complete([system, *ask("What is 1234 * 5678?")], schema=schema, max_tokens=20)
    assert again.text == sure.text and again.choice_probabilities is not None
    assert again.choice_probabilities.probabilities == pytest.approx(probabilities, abs=0.05)
    unsure = slm.complete([system, *ask("Tell me a poem about autumn.")], schema=schema, max_tokens=20)
    assert unsure.confidence is not None and sure.confidence is not None
    assert unsure.confidence < sure.confidence


def test_tool_arguments_follow_the_schema(slm: LlamaCppModel) -> None:
    schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "value": {"type": "number"},
            "from_unit": {"type": "string"},
            "to_unit": {"type": "string"},
        },
        "required": ["value", "from_unit", "to_unit"],
    }
    reply = slm.complete(
        ask("Convert 5 kilometers to miles. Give the arguments."), schema=schema, max_tokens=60
    )
    data = json.loads(reply.text)
    assert set(data) == {"value", "from_unit", "to_unit"}
    assert isinstance(data["value"], int | float)


def test_max_tokens_caps_and_reports_truncation(slm: LlamaCppModel) -> None:
    reply = slm.complete(ask("List the numbers from 1 to 50, separated by commas."), max_tokens=5)
    assert reply.completion_tokens <= 5 and reply.truncated


def test_calls_from_threads_are_serialised(slm: LlamaCppModel) -> None:
    results: list[str] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(slm.complete(ask("Say hi."), max_tokens=8).text)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(results) == 3 and len(set(results)) == 1  # deterministic


def test_bounds_are_dropped_from_grammars_and_bad_schemas_raise() -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 100000},
            "tags": {"type": "array", "maxItems": 10000, "items": {"type": "string"}},
        },
    }
    stripped = grammar_schema(schema)
    assert "maxLength" not in json.dumps(stripped) and "maxItems" not in json.dumps(stripped)
    assert build_grammar(schema) is not None
    with pytest.raises(SchemaError, match="cannot be turned into a llama.cpp grammar"):
        build_grammar({"type": "object", "properties": {"x": {"$ref": "#/definitions/missing"}}})


def test_enum_values_with_quotes_and_backslashes_constrain_the_reply_in_the_schemas_order(
    slm: LlamaCppModel,
) -> None:
    """A sentence holding quotes or a backslash is a value the grammar offers as written
    (llama-cpp-python's own converter ended such a literal early: the grammar did not parse
    and the process crashed), and ``propertyOrdering`` sets the order the model writes in."""
    options = ['It can "un-stringize" annotations.', "Paths use C:\\temp on Windows.", "Nothing else."]
    schema = {
        "type": "object",
        "properties": {"quote": {"type": "string", "enum": options}, "answer": {"type": "string"}},
        "required": ["quote", "answer"],
        "propertyOrdering": ["quote", "answer"],
    }
    prompt = 'Which sentence talks about annotations? Reply {"quote": "...", "answer": "..."}.'
    reply = slm.complete(ask(prompt), schema=schema, max_tokens=60)
    assert reply.text.lstrip().startswith('{"quote"')  # the quote first, though "answer" sorts before it
    assert json.loads(reply.text)["quote"] in options


def test_a_grammar_llama_cpp_cannot_parse_is_a_schema_error_not_a_crash(slm: LlamaCppModel) -> None:
    from llama_cpp.llama_grammar import LlamaGrammar
    from tierflow.agents.grammar import check_grammar

    broken = LlamaGrammar.from_string('root ::= "unterminated', verbose=False)  # parsed only when sampled
    with pytest.raises(SchemaError, match="cannot parse the grammar"):
        check_grammar(slm.load()._model.vocab, broken)  # noqa: SLF001


def test_missing_and_corrupt_files_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        LlamaCppModel(tmp_path / "none.gguf").load()
    not_gguf = tmp_path / "weights.gguf"
    not_gguf.write_bytes(b"PK\x03\x04 not a model")
    with pytest.raises(ModelFileError, match="not a GGUF model file"):
        LlamaCppModel(not_gguf).load()
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(ModelFileError, match="could not load"):
        LlamaCppModel(truncated).load()


def test_token_signals_see_a_value_the_grammar_forced(slm: LlamaCppModel) -> None:
    messages = [
        {"role": "system", "content": "Extract the arguments for get_weather(city, unit). Reply with JSON."},
        {"role": "user", "content": "What's the weather in Paris in fahrenheit?"},
    ]
    unit = {"type": "string", "enum": ["celsius", "fahrenheit"]}
    free = {"type": "object", "properties": {"city": {"type": "string"}, "unit": unit}, "required": ["city"]}
    forced = {**free, "properties": {"city": {"type": "string", "enum": ["Zzyzx"]}, "unit": unit}}
    natural = slm.complete(messages, schema=free, max_tokens=40)  # type: ignore[arg-type]
    unlikely = slm.complete(messages, schema=forced, max_tokens=40)  # type: ignore[arg-type]
    assert "Paris" in natural.text and "Zzyzx" in unlikely.text
    assert natural.signals is not None and unlikely.signals is not None
    assert natural.signals.forced_tokens == 0 and unlikely.signals.forced_tokens >= 1
    assert unlikely.signals.min_logprob < natural.signals.min_logprob - 5
    assert natural.signals.min_logprob > -3  # the model was sure of "Paris"


def test_a_free_text_reply_carries_the_log_probabilities_of_its_tokens(slm: LlamaCppModel) -> None:
    sure = [{"role": "user", "content": "Reply with exactly the word: yes"}]
    open_ended = [{"role": "user", "content": "Invent a name for a new colour and describe it."}]
    said = slm.complete(sure, max_tokens=8)  # type: ignore[arg-type]
    made_up = slm.complete(open_ended, max_tokens=40)  # type: ignore[arg-type]
    assert said.signals is not None and made_up.signals is not None
    assert said.signals.forced_tokens == 0 and 1 <= said.signals.tokens <= said.completion_tokens
    assert made_up.signals.tokens >= 10
    assert said.signals.mean_logprob > made_up.signals.mean_logprob  # surer of the word it was told


PASSAGE = (
    "The northern plant produced 4,200 tonnes of steel in March, up from 3,900 in February. "
    "Its new furnace, installed in January after two years of planning, cut the energy used "
    "per tonne by a fifth. The southern plant was closed for repairs for the whole month and "
    "produced nothing, so the company's total output fell by a tenth against the year before."
)


def test_the_watch_ends_a_reply_that_copies_or_runs_over_while_it_is_written(slm: LlamaCppModel) -> None:
    from tierflow.agents.watch import GenerationWatch, watching

    copy = ask(f"Repeat this text exactly, word for word:\n\n{PASSAGE}")
    free = slm.complete(copy, max_tokens=120)
    with watching(GenerationWatch(source=PASSAGE)) as watch:
        stopped = slm.complete(copy, max_tokens=120)
    assert watch is not None and watch.stopped == "copies_source"
    assert (stopped.stopped, stopped.finish_reason) == ("copies_source", "stopped")
    assert stopped.completion_tokens < free.completion_tokens / 2  # the tokens it did not write
    assert free.text.startswith(stopped.text.strip()[:40])  # the same reply, cut short

    many = ask("Write ten short sentences about the sea.")
    with watching(GenerationWatch(max_sentences=2)):
        over = slm.complete(many, max_tokens=200)
    assert over.stopped == "over_budget" and over.completion_tokens < 120
    after = slm.complete(many, max_tokens=200)  # the model is sound after a forced end
    assert after.stopped is None and after.completion_tokens > over.completion_tokens
