"""``tierflow learn``'s evidence: base SLM and SLM + adapter compared on held-out lessons
(scripted models here; the real SLM with a real adapter is in the real tests)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tierflow.agents.scripted import ScriptedModel
from tierflow.errors import ConfigError, TaskInputError
from tierflow.learning.compare import agrees, comparable, compare
from tierflow.learning.learn import Dataset, LearnOptions, gather, read_lessons
from tierflow.memory.lessons import Lesson, LessonSummary
from tierflow.optional import require

from tests.test_cli import no_traceback, tierflow

CHOICE = {"type": "object", "properties": {"label": {"enum": ["bug", "refund", "question"]}}}
FIELDS = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}


def lesson(schema: dict[str, Any] | None, target: Any, text: str = "a request") -> Lesson:
    return Lesson(
        messages=[{"role": "user", "content": text}],
        target=target if isinstance(target, str) else json.dumps(target),
        schema=schema,
        kind="choose" if schema is CHOICE else "extract" if schema else "text",
        node="n",
        run_id="r",
        source="llm",
    )


def test_an_output_agrees_with_a_lesson_as_two_tiers_outputs_are_compared() -> None:
    choice = lesson(CHOICE, {"label": "refund"})
    assert agrees(choice, '{"label": " Refund"}') and not agrees(choice, '{"label": "bug"}')
    fields = lesson(FIELDS, {"city": "Paris", "days": 3})
    assert agrees(fields, '{"city": "paris ", "days": 3.0}')
    assert not agrees(fields, '{"city": "Paris", "days": 4}')
    assert not agrees(fields, "Paris, 3 days")  # not JSON: wrong
    assert not comparable(lesson(None, "Three days in Paris."))  # a text needs a judge


def test_both_models_run_every_comparable_held_out_lesson() -> None:
    held_out = [lesson(CHOICE, {"label": "refund"}, f"r{n}") for n in range(6)]
    held_out += [lesson(FIELDS, {"city": "Oslo", "days": 2}, "trip"), lesson(None, "A text.")]
    base = ScriptedModel(['{"label": "bug"}'] * 6 + ['{"city": "Oslo", "days": 2}'])
    adapted = ScriptedModel(['{"label": "refund"}'] * 5 + ['{"label": "bug"}', '{"city": "Oslo", "days": 2}'])
    seen: list[str] = []
    result = compare(
        base, adapted, held_out, margin=0.05, min_items=5, on_progress=lambda p: seen.append(p.stage)
    )
    assert (result.items, result.base_right, result.adapter_right) == (7, 1, 6)
    promoted, why = result.verdict()
    assert promoted and "6/7" in why and "1/7" in why
    assert seen.count("base SLM on held-out decisions") == 7
    assert len(base.calls) == len(adapted.calls) == 7  # the text lesson is not sent


def test_lessons_from_a_file_of_chat_lines_and_a_clear_error_for_a_bad_line(tmp_path: Path) -> None:
    good = tmp_path / "distill.jsonl"
    lines = [
        {"messages": [{"role": "user", "content": f"q{n}"}, {"role": "assistant", "content": f"a{n}"}]}
        for n in range(12)
    ]
    lines[0]["metadata"] = {"run_id": "r-1", "node": "answer"}
    good.write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    found = read_lessons(good)
    assert len(found) == 12 and found[0].node == "answer" and found[0].run_id == "r-1"
    assert found[1].target == "a1" and found[1].kind == "text" and not comparable(found[1])
    dataset = gather(None, LearnOptions(from_file=good, held_out=0.3))
    assert len(dataset.train) + len(dataset.held_out) == 12 and dataset.summary.kept == {"llm": 12}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(lines[1]) + "\n" + '{"messages": [{"role": "user", "content": "x"}]}\n')
    with pytest.raises(TaskInputError, match="line 2"):
        read_lessons(bad)


def test_a_trained_runs_lesson_file_can_be_learned_from_again(tmp_path: Path) -> None:
    """A trained adapter's lessons.jsonl says each line's split; read back, every lesson is
    one again (train and held-out alike), to be split anew."""
    from tierflow.learning.learn import write_lessons

    train = [lesson(CHOICE, {"label": "bug"}, text=f"request {n}") for n in range(3)]
    held_out = [lesson(CHOICE, {"label": "refund"}, text="request 9")]
    write_lessons(tmp_path / "lessons.jsonl", train, held_out=held_out)
    assert '"split": "held_out"' in (tmp_path / "lessons.jsonl").read_text(encoding="utf-8")
    assert read_lessons(tmp_path / "lessons.jsonl") == train + held_out


def test_too_few_lessons_and_a_missing_train_extra_say_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    few = Dataset([lesson(CHOICE, {"label": "bug"})] * 3, [], LessonSummary())
    with pytest.raises(TaskInputError, match="at least 10"):
        few.check_trainable()
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "peft" else real(name, *a)
    )
    with pytest.raises(ConfigError) as error:
        require("torch", "peft", purpose="tierflow learn (training an adapter)")
    assert "pip install 'tierflow[train]'" in (error.value.hint or "")


def test_the_learn_command_refuses_bad_input_with_exit_2(tmp_path: Path) -> None:
    env = {"TIERFLOW_DATA_DIR": str(tmp_path / "data")}
    both = tierflow("learn", "--from", str(tmp_path / "x.jsonl"), "--from-runs", env=env)
    assert both.returncode == 2 and "two sources" in both.stderr
    missing = tierflow("learn", "--from", str(tmp_path / "none.jsonl"), env=env)
    assert missing.returncode == 2 and "is not a file" in missing.stderr
    empty = tierflow("learn", env=env)
    assert empty.returncode == 2 and "at least 10" in empty.stderr and "--dry-run" in empty.stderr
    served = tierflow("learn", env={**env, "TIERFLOW_SLM": "ollama:qwen2.5:0.5b"})
    assert served.returncode == 2 and "set to a server" in served.stderr and "serve-slm" in served.stderr
    no_traceback(empty)
    curve = tierflow("eval", "learn", "--taught", str(tmp_path / "none.jsonl"), env=env)
    assert curve.returncode == 2 and "is not a file" in curve.stderr and "--taught" in curve.stderr
    assert not (tmp_path / "data" / "eval-learn").exists()


def test_the_learning_rate_reaches_training_and_defaults_to_the_curves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--learning-rate` is what the adapter trains at; without it, 1e-4, the rate whose
    adapters helped on the learning curve."""
    import tierflow.cli.learn as learn_cli
    from tierflow.cli import app
    from tierflow.learning.learn import LearnOutcome
    from tierflow.learning.train import TrainOptions
    from typer.testing import CliRunner

    assert TrainOptions().learning_rate == 1e-4
    lessons = tmp_path / "lessons.jsonl"
    chats = [
        {"messages": [{"role": "user", "content": f"q{n}"}, {"role": "assistant", "content": "a"}]}
        for n in range(20)
    ]
    lessons.write_text("".join(json.dumps(chat) + "\n" for chat in chats), encoding="utf-8")
    seen: list[float] = []

    def train(dataset: Dataset, options: LearnOptions, as_json: bool) -> LearnOutcome:
        seen.append(options.train.learning_rate)
        raise TaskInputError("stopped before training")

    monkeypatch.setattr(learn_cli, "_train", train)
    monkeypatch.setenv("TIERFLOW_DATA_DIR", str(tmp_path / "data"))
    for extra in ([], ["--learning-rate", "3e-4"]):
        result = CliRunner().invoke(app, ["learn", "--from", str(lessons), *extra])
        assert result.exit_code == 2 and "stopped before training" in result.output
    assert seen == [1e-4, 3e-4]
