"""Signals that tell, for any tiered step, how likely the SLM's output is wrong, and the
fitting that turns labelled outputs into a score and a threshold.

A step is one of three kinds, and each kind has signals any step of it can compute from
the SLM's own output and the text it was given, with no model call:

* ``choose`` (one of fixed options): the probability of the option chosen, the margin to
  the next, the spread over all of them, and whether the option's words are in the input;
* ``extract`` (a JSON object): the log-probabilities of the value tokens and how many the
  grammar forced, and whether each string and number value is grounded in the input;
* ``text`` (free text: a summary, an answer): truncation, length against the budget, how
  much of it is copied from the input, numbers and names the input does not hold, and
  the log-probabilities of its tokens.

``fit_scorer`` fits a standardised, L2-penalised logistic regression (Newton's method
with numpy: calibration needs no scikit-learn) of "the SLM's output is wrong" on these
signals, and ``choose_thresholds`` picks, from out-of-fold scores, the largest threshold
whose accuracy loss against sending every output to the LLM stays within each stated
``max_loss``.
"""

from __future__ import annotations

import hashlib
import math
import re
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticUndefined
from tierflow.agents.faithfulness import ungrounded_names
from tierflow.agents.prompting import render_messages
from tierflow.agents.scoring import normal_text, number_grounded, string_grounded, written_numbers
from tierflow.json_values import json_leaves
from tierflow.records import ChoiceProbabilities, Message, TokenSignals

__all__ = [
    "StepKind",
    "STEP_KINDS",
    "StepView",
    "FEATURES",
    "PAST_FEATURES",
    "past_features",
    "step_features",
    "Logistic",
    "fit_logistic",
    "recalibrate",
    "log_loss",
    "grouped_folds",
    "Labelled",
    "ThresholdPoint",
    "choose_thresholds",
    "share_thresholds",
    "calls_share",
    "same_output",
    "JUDGE_SCHEMA",
    "judge_text_messages",
]

StepKind = Literal["choose", "extract", "text"]
STEP_KINDS: tuple[StepKind, ...] = ("choose", "extract", "text")

PAST_FEATURES = ("has_past", "past_similarity", "past_agrees")
"""A choice's or an extraction's agreement with the node's nearest verified past output:
whether one is stored, how similar its input is, and whether the outputs agree."""

FEATURES: dict[StepKind, tuple[str, ...]] = {
    "choose": (
        "options_log",
        "p_choice",
        "margin",
        "entropy",
        "choice_in_source",
        "best_other_in_source",
        "choice_is_best_in_source",
        *PAST_FEATURES,
    ),
    "extract": (
        "has_token_signals",
        "value_min_logprob",
        "value_mean_logprob",
        "forced_tokens_log",
        "values_log",
        "strings_grounded_share",
        "strings_ungrounded",
        "numbers_grounded_share",
        "numbers_ungrounded",
        "empty_values",
        "source_numbers_unused",
        *PAST_FEATURES,
    ),
    "text": (
        "empty",
        "truncated",
        "budget_share",
        "length_ratio_log",
        "copied_share",
        "new_words_share",
        "numbers_ungrounded",
        "numbers_ungrounded_share",
        "names_ungrounded",
        "has_token_signals",
        "min_logprob",
        "mean_logprob",
    ),
}
"""The signals of each kind of step, in the order a scorer's weights are."""

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    "a an and are as at be by for from how i in is it me my of on or the this to what with "
    "you your was were not no yes that which who".split()
)


@dataclass(frozen=True)
class StepView:
    """What the signals read of a step besides the SLM's output: its kind, the text its
    output must rest on (the inputs as the prompt gave them) and, for ``choose``, the options."""

    kind: StepKind
    source: str = ""
    options: tuple[str, ...] = ()
    into: str = ""
    """The state key the step writes its output to (a gold value of it labels the output)."""
    text: Callable[[Any], str] | None = None
    """For a ``text`` step whose parsed output is a structured reply: where its text is (the
    answer of a cited reply); the signals and the text judge read that."""

    def text_of(self, value: Any) -> str:
        """The output's text as the signals and the judge read it."""
        return self.text(value) if self.text is not None else str(value)


def step_features(
    view: StepView,
    value: Any,
    text: str,
    *,
    max_tokens: int,
    completion_tokens: int = 0,
    finish_reason: str = "stop",
    probabilities: ChoiceProbabilities | None = None,
    signals: TokenSignals | None = None,
    past: tuple[float, Any] | None = None,
) -> dict[str, float]:
    """The signals of one SLM output of a ``view.kind`` step, by name (``FEATURES``).

    ``value`` is the parsed output (the label, the extracted object, the text); ``text`` the
    raw reply. A signal the output does not carry (no choice probabilities from a remote SLM)
    is 0 with its ``has_...`` flag 0, so a scorer can tell absent from low."""
    if view.kind == "choose":
        return _choose_features(view, str(value), probabilities) | past_features("choose", value, past)
    if view.kind == "extract":
        return _extract_features(view.source, value, signals) | past_features("extract", value, past)
    return _text_features(
        view.source, view.text_of(value), max_tokens, completion_tokens, finish_reason, signals
    )


def past_features(kind: StepKind, value: Any, past: tuple[float, Any] | None) -> dict[str, float]:
    """``PAST_FEATURES`` of an output, given the node's nearest verified output and the
    similarity of its input (``None``: the node has none stored)."""
    if past is None:
        return dict.fromkeys(PAST_FEATURES, 0.0)
    similarity, output = past
    agrees = same_output(kind, value, output)
    return {"has_past": 1.0, "past_similarity": round(similarity, 4), "past_agrees": float(bool(agrees))}


def _words(text: str) -> set[str]:
    """Lower-case content words, cut to 5 letters (a cheap stem)."""
    spaced = text.replace("_", " ").replace("-", " ")
    return {word[:5] for word in _WORD.findall(spaced.lower()) if word not in _STOP}


def _in_source(option: str, source_words: set[str]) -> float:
    words = _words(option)
    return len(words & source_words) / len(words) if words else 0.0


def _choose_features(
    view: StepView, chosen: str, probabilities: ChoiceProbabilities | None
) -> dict[str, float]:
    options = view.options or ((chosen,) if chosen else ())
    probs = dict(probabilities.probabilities) if probabilities is not None else {chosen: 1.0}
    ranked = sorted(probs.values(), reverse=True)
    p_choice = probs.get(chosen, 0.0)
    rival = max((p for option, p in probs.items() if option != chosen), default=0.0)
    entropy = -sum(p * math.log(p) for p in ranked if p > 0)
    source = _words(view.source)
    overlap = {option: _in_source(option, source) for option in options}
    best_other = max((score for option, score in overlap.items() if option != chosen), default=0.0)
    chosen_overlap = overlap.get(chosen, 0.0)
    return {
        "options_log": math.log1p(len(options)),
        "p_choice": p_choice,
        "margin": p_choice - rival,
        "entropy": entropy / math.log(len(probs)) if len(probs) > 1 else 0.0,
        "choice_in_source": chosen_overlap,
        "best_other_in_source": best_other,
        "choice_is_best_in_source": float(chosen_overlap >= best_other),
    }


def _numbers(text: str) -> set[float]:
    return {float(number) for number in written_numbers(text)}


def _extract_features(source: str, value: Any, signals: TokenSignals | None) -> dict[str, float]:
    data = value.model_dump(by_alias=True) if hasattr(value, "model_dump") else value
    leaves = [leaf for leaf in json_leaves(data) if leaf is not None]
    source_normal = normal_text(source)
    source_words = set(source_normal.split())
    source_numbers = _numbers(source)
    strings = [leaf for leaf in leaves if isinstance(leaf, str)]
    numbers = [float(leaf) for leaf in leaves if isinstance(leaf, int | float) and not isinstance(leaf, bool)]
    grounded_strings = sum(string_grounded(s, source_normal, source_words) for s in strings)
    grounded_numbers = sum(number_grounded(n, source_numbers) for n in numbers)
    empty = sum(1 for leaf in json_leaves(data) if leaf in (None, "", [], {}))
    return {
        "has_token_signals": float(signals is not None),
        "value_min_logprob": signals.min_logprob if signals else 0.0,
        "value_mean_logprob": signals.mean_logprob if signals else 0.0,
        "forced_tokens_log": math.log1p(signals.forced_tokens) if signals else 0.0,
        "values_log": math.log1p(len(leaves)),
        "strings_grounded_share": grounded_strings / len(strings) if strings else 1.0,
        "strings_ungrounded": float(len(strings) - grounded_strings),
        "numbers_grounded_share": grounded_numbers / len(numbers) if numbers else 1.0,
        "numbers_ungrounded": float(len(numbers) - grounded_numbers),
        "empty_values": float(empty),
        "source_numbers_unused": float(len(source_numbers - set(numbers))),
    }


def _shingles(words: list[str], size: int = 4) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + size]) for i in range(max(0, len(words) - size + 1))}


def _text_features(
    source: str,
    text: str,
    max_tokens: int,
    completion_tokens: int,
    finish_reason: str,
    signals: TokenSignals | None,
) -> dict[str, float]:
    words, source_words = _WORD.findall(text.lower()), _WORD.findall(source.lower())
    shingles = _shingles(words)
    copied = len(shingles & _shingles(source_words)) / len(shingles) if shingles else 0.0
    content = _words(text)
    new_words = len(content - _words(source)) / len(content) if content else 0.0
    numbers, source_numbers = _numbers(text), _numbers(source)
    ungrounded = len(numbers - source_numbers)
    names = ungrounded_names(text, source)
    return {
        "empty": float(not text.strip()),
        "truncated": float(finish_reason == "length"),
        "budget_share": completion_tokens / max_tokens if max_tokens else 0.0,
        "length_ratio_log": math.log1p(len(text)) - math.log1p(len(source)),
        "copied_share": copied,
        "new_words_share": new_words,
        "numbers_ungrounded": float(ungrounded),
        "numbers_ungrounded_share": ungrounded / len(numbers) if numbers else 0.0,
        "names_ungrounded": float(len(names)),
        "has_token_signals": float(signals is not None),
        "min_logprob": signals.min_logprob if signals else 0.0,
        "mean_logprob": signals.mean_logprob if signals else 0.0,
    }


# Fitting ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Logistic:
    """A standardised logistic regression over named features: P(the SLM's output is wrong)."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float

    def logit(self, values: Mapping[str, float]) -> float:
        """The log-odds that the output is wrong."""
        return self.intercept + sum(
            c * (float(values.get(name, 0.0)) - m) / s
            for name, c, m, s in zip(self.features, self.coef, self.mean, self.scale, strict=True)
        )

    def p_wrong(self, values: Mapping[str, float]) -> float:
        return 1.0 / (1.0 + math.exp(-max(min(self.logit(values), 50.0), -50.0)))

    def to_json(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "mean": list(self.mean),
            "scale": list(self.scale),
            "coef": list(self.coef),
            "intercept": self.intercept,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Logistic:
        return cls(
            features=tuple(str(name) for name in data["features"]),
            mean=tuple(float(v) for v in data["mean"]),
            scale=tuple(float(v) for v in data["scale"]),
            coef=tuple(float(v) for v in data["coef"]),
            intercept=float(data["intercept"]),
        )


def fit_logistic(
    rows: Sequence[Mapping[str, float]],
    wrong: Sequence[bool],
    features: Sequence[str],
    *,
    penalty: float = 1.0,
    iterations: int = 50,
) -> Logistic:
    """The logistic regression of ``wrong`` on ``rows`` (standardised; ``penalty`` is the L2
    weight on the coefficients, not the intercept), by Newton's method.

    With only right or only wrong outputs there is nothing to separate: the result is the
    constant model of that rate (every coefficient 0)."""
    names = tuple(features)
    x = np.asarray([[float(row.get(name, 0.0)) for name in names] for row in rows], dtype=float)
    y = np.asarray(wrong, dtype=float)
    if x.size == 0:
        x = x.reshape(len(y), len(names))
    mean = x.mean(axis=0) if len(y) else np.zeros(len(names))
    scale = x.std(axis=0) if len(y) else np.ones(len(names))
    scale[scale == 0] = 1.0
    rate = (y.sum() + 0.5) / (len(y) + 1.0)  # never 0 or 1
    if len(y) == 0 or y.min() == y.max():
        return Logistic(names, tuple(mean), tuple(scale), (0.0,) * len(names), math.log(rate / (1 - rate)))
    design = np.hstack([np.ones((len(y), 1)), (x - mean) / scale])
    beta = np.zeros(design.shape[1])
    beta[0] = math.log(rate / (1 - rate))
    ridge = np.eye(design.shape[1]) * penalty
    ridge[0, 0] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ beta, -50, 50)))
        gradient = design.T @ (p - y) + ridge @ beta
        hessian = (design * (p * (1 - p))[:, None]).T @ design + ridge
        step = np.linalg.solve(hessian + np.eye(len(beta)) * 1e-9, gradient)
        beta -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    return Logistic(
        names,
        tuple(float(v) for v in mean),
        tuple(float(v) for v in scale),
        tuple(float(v) for v in beta[1:]),
        float(beta[0]),
    )


def recalibrate(model: Logistic, rows: Sequence[Mapping[str, float]], wrong: Sequence[bool]) -> Logistic:
    """``model`` rescaled to these labels (Platt scaling): P(wrong) = sigmoid(a * logit + b),
    two parameters fitted by ``fit_logistic`` on the model's log-odds. It ranks outputs as
    ``model`` does, so a hundred labels only have to set its scale and its base rate, not
    every weight. A slope the labels put below zero (the model ranks them backwards) gives
    the constant model of their rate."""
    platt = fit_logistic([{"logit": model.logit(row)} for row in rows], wrong, ("logit",))
    slope = platt.coef[0] / platt.scale[0]
    if slope <= 0:
        return fit_logistic(rows, wrong, ())
    intercept = platt.intercept + slope * (model.intercept - platt.mean[0])
    return Logistic(model.features, model.mean, model.scale, tuple(c * slope for c in model.coef), intercept)


def log_loss(items: Sequence[Labelled]) -> float:
    """The mean negative log-likelihood of the SLM's outputs being wrong under their scores
    (lower is better; a constant score at the base rate sets the bar)."""
    eps = 1e-6
    return -sum(
        math.log(max(eps, 1.0 - item.p_wrong) if item.slm_right else max(eps, item.p_wrong)) for item in items
    ) / max(1, len(items))


def grouped_folds(groups: Sequence[str], folds: int = 5) -> list[int]:
    """A fold per item, the same for every item of a group (items that share a source, or
    the same input, never sit on both sides of a fit), fixed by the group's name."""
    return [int(hashlib.sha256(f"fold:{group}".encode()).hexdigest(), 16) % folds for group in groups]


@dataclass(frozen=True)
class Labelled:
    """One SLM output with its out-of-fold P(wrong), and whether the SLM's and the LLM's
    outputs were right (without a gold value the LLM's is taken as right, and the SLM's is
    right when it agrees with it)."""

    p_wrong: float
    slm_right: bool
    llm_right: bool = True


@dataclass(frozen=True)
class ThresholdPoint:
    """Escalating above ``threshold``: the share of outputs kept on the SLM, and the
    accuracy lost against sending every output to the LLM (with a 90% interval)."""

    max_loss: float
    threshold: float
    slm_share: float
    loss: float
    loss_low: float
    loss_high: float


def choose_thresholds(items: Sequence[Labelled], max_losses: Sequence[float]) -> list[ThresholdPoint]:
    """For each ``max_loss``, the largest threshold (the most outputs kept on the SLM) whose
    measured accuracy loss against all-LLM is at most ``max_loss``; with none, 0 (escalate
    every output). The interval is the loss's normal approximation over the items."""
    if not items:
        return [ThresholdPoint(loss, 0.0, 0.0, 0.0, 0.0, 0.0) for loss in max_losses]
    candidates = sorted({0.0, *(item.p_wrong for item in items), 1.0})
    curve = [(threshold, *_loss_at(items, threshold)) for threshold in candidates]
    points = []
    for max_loss in max_losses:
        fitting = [point for point in curve if point[2] <= max_loss + 1e-12]
        threshold, share, loss, half = max(fitting, key=lambda point: (point[1], point[0]))
        points.append(ThresholdPoint(max_loss, threshold, share, loss, loss - half, loss + half))
    return points


def calls_share(steps: int, kept: float) -> float:
    """The SLM share of model calls when ``kept`` of ``steps`` SLM outputs stay on the SLM:
    every step makes one SLM call, and each escalated one an LLM call too."""
    return steps / (2 * steps - kept) if steps else 0.0


def share_thresholds(
    by_node: Mapping[str, Sequence[Labelled]], slm_share: float
) -> dict[str, ThresholdPoint]:
    """Per node, the point of one P(wrong) cutoff shared by all nodes: the lowest at which the
    graph's SLM share of model calls (``calls_share``) reaches ``slm_share``. Escalating the
    likeliest-wrong outputs of any node first loses the least for the calls it saves, as far
    as the scores are probabilities. Each point's ``max_loss`` is the loss it measured."""
    ordered = sorted(item.p_wrong for node_items in by_node.values() for item in node_items)
    candidates = sorted({0.0, *ordered, 1.0})
    cutoff = next(
        (c for c in candidates if calls_share(len(ordered), bisect_right(ordered, c)) >= slm_share - 1e-12),
        1.0,
    )
    points = {}
    for node, node_items in by_node.items():
        share, loss, half = _loss_at(node_items, cutoff) if node_items else (0.0, 0.0, 0.0)
        points[node] = ThresholdPoint(loss, cutoff, share, loss, loss - half, loss + half)
    return points


def _loss_at(items: Sequence[Labelled], threshold: float) -> tuple[float, float, float]:
    """Share kept on the SLM, loss against all-LLM, and the loss's 90% half-width."""
    differences = [(item.llm_right - item.slm_right) if item.p_wrong <= threshold else 0 for item in items]
    n = len(items)
    kept = sum(item.p_wrong <= threshold for item in items) / n
    loss = sum(differences) / n
    spread = math.sqrt(sum((d - loss) ** 2 for d in differences) / max(n - 1, 1) / n)
    return kept, loss, 1.645 * spread


# Labels -------------------------------------------------------------------------------
FREE_TEXT_WORDS = 6
"""A string field longer than this in both outputs is free text: two tiers never word it alike,
so ``same_output`` leaves it out of an ``extract`` comparison."""


def same_output(kind: StepKind, output: Any, reference: Any) -> bool | None:
    """Whether an output matches a reference (the LLM's, or a gold value): the same label for
    ``choose``, field by field for ``extract`` (strings ignoring case and spacing, numbers as
    numbers; only the fields a reference names when it is a gold value of some of them, and
    free-text fields left out); ``None`` for ``text``, which needs a judge
    (``judge_text_messages``)."""
    if kind == "choose":
        return str(output).strip().casefold() == str(reference).strip().casefold()
    if kind == "extract":
        output, reference = _as_model(output, reference), _as_model(reference, output)
        got, want = _plain(output), _plain(reference)
        if isinstance(got, dict) and isinstance(want, dict):
            got, want = {key: got.get(key) for key in want}, dict(want)
            for key in [k for k in want if _free_text(got[k]) and _free_text(want[k])]:
                del got[key], want[key]
        return bool(_normalised(got) == _normalised(want))
    return None


def _free_text(value: Any) -> bool:
    return isinstance(value, str) and len(value.split()) > FREE_TEXT_WORDS


def _as_model(value: Any, other: Any) -> Any:
    """A stored dict read as the other side's model when it fits, so both get its defaults."""
    if isinstance(value, dict) and isinstance(other, BaseModel):
        try:
            return type(other).model_validate(value)
        except ValidationError:
            return value
    return value


def _plain(value: Any) -> Any:
    """A model as a dict by alias, with a field left empty (``None``) read as its default: an
    omitted optional argument and its default mean the same call."""
    if isinstance(value, BaseModel):
        plain: dict[str, Any] = {}
        for name, field in type(value).model_fields.items():
            item = _plain(getattr(value, name))
            if item is None and field.default not in (None, PydanticUndefined):
                item = field.default
            plain[field.alias or name] = item
        return plain
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _normalised(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _normalised(v) for k, v in value.items() if v not in (None, "", [], {})}
    if isinstance(value, list | tuple):
        return [_normalised(item) for item in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return round(float(value), 6)
    if isinstance(value, str):
        number = _as_number(value)
        return number if number is not None else " ".join(value.casefold().split())
    return value


def _as_number(text: str) -> float | None:
    try:
        return round(float(text.replace(",", "")), 6)
    except ValueError:
        return None


JUDGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"verdict": {"type": "string", "enum": ["same", "different"]}},
    "required": ["verdict"],
}
"""The reply a text judge gives (``judge_text_messages``)."""


def judge_text_messages(source: str, answer: str, reference: str) -> list[Message]:
    """The prompt that asks a model whether ``answer`` says what ``reference`` says."""
    return render_messages("judge_text", source=source, answer=answer, reference=reference)
