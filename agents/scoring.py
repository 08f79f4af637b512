"""The escalation score: how likely an SLM tool-call decision is wrong, from what the SLM's
own output shows, and the per-node thresholds that turn it into "escalate or keep".

Grammar forcing makes the SLM's output valid; it does not make it right. What does show a
wrong decision is measured here, on the decision alone (no model call):

* the choice: the probability the SLM gave the tool it chose, and "none";
* whether the chosen tool is the one the request talks about (word overlap of the request
  with each tool's name and description);
* the arguments: log-probabilities of the generated values (``TokenSignals``), whether
  each string and number value appears in the request, schema range checks, empty values.

A logistic regression over these features, trained on paired SLM/LLM runs
(``tierflow eval routing --train``), gives P(wrong) per node. Its file ships with the
package together with what it was trained on; at run time it is plain arithmetic (no
scikit-learn). The thresholds are chosen per node on a calibration split for a stated
maximum accuracy loss against sending every decision to the LLM (``TierPolicy.max_loss``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from tierflow.agents.signals import TokenSignals
from tierflow.errors import ConfigError
from tierflow.json_values import json_leaves

__all__ = [
    "written_numbers",
    "SELECT_FEATURES",
    "ARGS_FEATURES",
    "ToolText",
    "select_features",
    "tool_line",
    "args_features",
    "NodeScorer",
    "EscalationScorer",
    "SCORER_FILE",
    "OPTIONS_KEPT",
    "top_options",
    "default_scorer",
    "normal_text",
    "string_grounded",
    "number_grounded",
]

OPTIONS_KEPT = 8
"""How many of a choice's options, most probable first, the trace keeps and the score reads."""

SCORER_FILE = Path(__file__).parent / "data" / "escalation_scorer.json"

SELECT_FEATURES = (
    "tools_log",
    "chose_none",
    "p_choice",
    "p_none",
    "margin",
    "entropy",
    "name_overlap",
    "description_overlap",
    "best_other_overlap",
    "chosen_is_best_overlap",
    "max_overlap",
    "request_words_log",
    "non_ascii_share",
    "none_x_max_overlap",
    "chosen_similarity",
    "max_similarity",
    "chosen_is_most_similar",
    "none_x_max_similarity",
)
ARGS_FEATURES = (
    *SELECT_FEATURES,
    "value_min_logprob",
    "value_mean_logprob",
    "forced_tokens_log",
    "values",
    "strings_grounded",
    "strings_ungrounded",
    "numbers_grounded",
    "numbers_ungrounded",
    "empty_values",
    "optional_filled",
    "range_violations",
    "strings_from_schema",
    "request_numbers_unused",
    "required_params",
)

_WORD = re.compile(r"[a-z0-9]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)?")
_WRITTEN_NUMBER = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?")
_STOP = frozenset(
    "a an and are as at be by for from get how i in is it me my of on or please the this to "
    "what with you your can do does will would should set use".split()
)


@dataclass(frozen=True)
class ToolText:
    """What the score reads of a tool: its name, description and JSON-schema parameters."""

    name: str
    description: str
    parameters: Mapping[str, Any]


def _words(text: str) -> set[str]:
    """Lower-case content words, cut to 5 letters (a cheap stem: ``weathers`` ~ ``weather``)."""
    spaced = _CAMEL.sub(" ", text).replace("_", " ").replace(".", " ")
    return {word[:5] for word in _WORD.findall(spaced.lower()) if word not in _STOP}


def _overlap(request: set[str], text: str) -> float:
    words = _words(text)
    return len(words & request) / len(words) if words else 0.0


def tool_line(tool: ToolText) -> str:
    """The text a tool is embedded as, for its similarity to a request."""
    return f"{tool.name}: {tool.description}"


def select_features(
    request: str,
    tools: Sequence[ToolText],
    choice: str,
    probabilities: Mapping[str, float] | None,
    similarities: Sequence[float] | None,
) -> list[float]:
    """The select_tool features of choosing ``choice`` (a tool name, or ``none``).
    ``similarities``: the request's embedding similarity to each tool's ``tool_line``."""
    asked = _words(request)
    probs = top_options(probabilities or {choice: 1.0})
    ranked = sorted(probs.values(), reverse=True)
    p_choice = probs.get(choice, 0.0)
    best_rival = max((p for option, p in probs.items() if option != choice), default=0.0)
    entropy = -sum(p * math.log(p) for p in ranked if p > 0)
    name_scores = {tool.name: _overlap(asked, tool.name) for tool in tools}
    text_scores = {tool.name: _overlap(asked, f"{tool.name} {tool.description}") for tool in tools}
    chosen = text_scores.get(choice, 0.0)
    others = [score for name, score in text_scores.items() if name != choice]
    best_other = max(others, default=0.0)
    return [
        math.log1p(len(tools)),
        float(choice == "none"),
        p_choice,
        probs.get("none", 0.0),
        p_choice - best_rival,
        entropy / math.log(len(probs)) if len(probs) > 1 else 0.0,
        name_scores.get(choice, 0.0),
        chosen,
        best_other,
        float(choice != "none" and chosen >= best_other),
        max(text_scores.values(), default=0.0),
        math.log1p(len(_WORD.findall(request.lower()))),
        sum(1 for character in request if ord(character) > 127) / max(len(request), 1),
        float(choice == "none") * max(text_scores.values(), default=0.0),
        *_similarity_features(tools, choice, similarities),
    ]


def _similarity_features(
    tools: Sequence[ToolText], choice: str, similarities: Sequence[float] | None
) -> list[float]:
    if not similarities or len(similarities) != len(tools):
        return [0.0, 0.0, 0.0, 0.0]
    by_name = {tool.name: value for tool, value in zip(tools, similarities, strict=True)}
    chosen, best = by_name.get(choice, 0.0), max(similarities)
    return [chosen, best, float(choice in by_name and chosen >= best), float(choice == "none") * best]


def top_options(probabilities: Mapping[str, float], keep: int = OPTIONS_KEPT) -> dict[str, float]:
    """The ``keep`` most probable options of a choice (what a trace stores of it)."""
    ranked = sorted(probabilities.items(), key=lambda item: -item[1])
    return dict(ranked[:keep])


def normal_text(text: str) -> str:
    """The text's lower-case words and numbers, one space apart."""
    return " ".join(_WORD.findall(text.lower()))


def string_grounded(value: str, request_normal: str, request_words: set[str]) -> bool:
    """The value is in the request, or all of its words are (in another order or case)."""
    normal = normal_text(value)
    if not normal:
        return True
    return normal in request_normal or set(normal.split()) <= request_words


def written_numbers(text: str) -> list[str]:
    """The numbers a text states, signed, without thousands separators. A comma groups
    thousands only before exactly three digits, so a CSV line's values stay apart
    ("bolts,340,0.12" states 340 and 0.12, not 3400.12)."""
    return [match.replace(",", "") for match in _WRITTEN_NUMBER.findall(text)]


def number_grounded(value: float, request_numbers: set[float]) -> bool:
    """The number is in the request, or is 0, 1 or -1 (defaults anyone may write). An
    infinite or NaN value (JSON's 1e999) is never grounded."""
    if not math.isfinite(value):
        return False
    return value in request_numbers or (value == int(value) and abs(value) <= 1)


def args_features(
    request: str,
    tool: ToolText,
    arguments: Mapping[str, Any] | None,
    signals: TokenSignals | None,
    select: Sequence[float],
) -> list[float]:
    """The extract_args features: the decision's select features, then the arguments'."""
    properties = tool.parameters.get("properties") or {}
    required = set(tool.parameters.get("required") or [])
    if arguments is None:
        return [*select, -20.0, -20.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, len(required)]
    request_normal = normal_text(request)
    request_words = set(request_normal.split())
    request_numbers = {float(n.replace(",", ".")) for n in _NUMBER.findall(request)}
    schema_text = normal_text(f"{tool.description} {json.dumps(tool.parameters, ensure_ascii=False)}")
    strings = grounded_strings = numbers = grounded_numbers = empty = from_schema = 0
    used_numbers: set[float] = set()
    for leaf in json_leaves(dict(arguments)):
        if isinstance(leaf, bool) or leaf is None:
            continue
        if isinstance(leaf, str):
            if not leaf.strip():
                empty += 1
                continue
            strings += 1
            used_numbers |= {float(n.replace(",", ".")) for n in _NUMBER.findall(leaf)}
            if string_grounded(leaf, request_normal, request_words):
                grounded_strings += 1
            elif normal_text(leaf) and normal_text(leaf) in schema_text:  # copied from the tool's description
                from_schema += 1
        elif isinstance(leaf, int | float):
            numbers += 1
            used_numbers.add(float(leaf))
            grounded_numbers += number_grounded(float(leaf), request_numbers)
    empty += sum(1 for value in arguments.values() if value in ([], {}))
    optional = [name for name in properties if name not in required]
    filled = sum(1 for name in optional if name in arguments)
    violations = sum(_range_violations(arguments.get(name), spec) for name, spec in properties.items())
    low = max(signals.min_logprob, -20.0) if signals else 0.0
    mean = max(signals.mean_logprob, -20.0) if signals else 0.0
    return [
        *select,
        low,
        mean,
        math.log1p(signals.forced_tokens) if signals else 0.0,
        float(len(arguments)),
        grounded_strings / strings if strings else 1.0,
        float(strings - grounded_strings),
        grounded_numbers / numbers if numbers else 1.0,
        float(numbers - grounded_numbers),
        float(empty),
        filled / len(optional) if optional else 0.0,
        float(violations),
        float(from_schema),
        float(len(request_numbers - used_numbers)),
        float(len(required)),
    ]


def _range_violations(value: Any, spec: Any) -> int:
    if not isinstance(spec, dict) or value is None:
        return 0
    count = 0
    if isinstance(value, int | float) and not isinstance(value, bool):
        low, high = spec.get("minimum"), spec.get("maximum")
        count += isinstance(low, int | float) and value < low
        count += isinstance(high, int | float) and value > high
    options = spec.get("enum")
    if isinstance(options, list) and value not in options:
        count += 1
    return count


@dataclass(frozen=True)
class NodeScorer:
    """A standardised logistic regression: P(the SLM's decision at this node is wrong)."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    thresholds: tuple[tuple[float, float], ...]  # (max_loss, threshold), max_loss ascending
    none_gate: float | None = None  # select_tool: "none" stands only below this tool similarity

    def p_wrong(self, values: Sequence[float]) -> float:
        if len(values) != len(self.features):
            raise ValueError(f"expected {len(self.features)} features, got {len(values)}")
        z = self.intercept + sum(
            c * (v - m) / s for c, v, m, s in zip(self.coef, values, self.mean, self.scale, strict=True)
        )
        return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))

    def none_confirmed(self, features: Sequence[float]) -> bool:
        """Whether a "none" answer is confirmed by more than the SLM's word: the request is
        not close to any tool (embedding similarity below the gate learned on train)."""
        if self.none_gate is None:
            return True
        if "max_similarity" not in self.features:
            return False
        similarity = features[self.features.index("max_similarity")]
        return similarity != 0.0 and similarity < self.none_gate

    def threshold(self, max_loss: float) -> float:
        """The calibrated threshold for an accuracy loss of at most ``max_loss`` (the
        strictest calibrated loss when ``max_loss`` is below all of them)."""
        chosen = self.thresholds[0][1]
        for loss, threshold in self.thresholds:
            if loss <= max_loss + 1e-9:
                chosen = threshold
        return chosen

    def to_json(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "mean": list(self.mean),
            "scale": list(self.scale),
            "coef": list(self.coef),
            "intercept": self.intercept,
            "thresholds": [list(pair) for pair in self.thresholds],
            **({"none_gate": self.none_gate} if self.none_gate is not None else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NodeScorer:
        return cls(
            features=tuple(data["features"]),
            mean=tuple(float(v) for v in data["mean"]),
            scale=tuple(float(v) for v in data["scale"]),
            coef=tuple(float(v) for v in data["coef"]),
            intercept=float(data["intercept"]),
            thresholds=tuple((float(a), float(b)) for a, b in data["thresholds"]),
            none_gate=float(data["none_gate"]) if data.get("none_gate") is not None else None,
        )


@dataclass(frozen=True)
class EscalationScorer:
    """The score of each node that decides a tool call, and what it was trained on."""

    nodes: Mapping[str, NodeScorer]
    trained_on: Mapping[str, Any]
    path: Path | None = None

    def save(self, path: Path) -> None:
        document = {
            "trained_on": dict(self.trained_on),
            "nodes": {node: scorer.to_json() for node, scorer in self.nodes.items()},
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
        temporary.replace(path)

    @classmethod
    def load(cls, path: Path = SCORER_FILE) -> EscalationScorer:
        rebuild = "Rebuild it with `tierflow eval routing --train` (or restore it from the package)."
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            nodes = {node: NodeScorer.from_json(data) for node, data in document["nodes"].items()}
            for node, scorer in nodes.items():
                expected = ARGS_FEATURES if node == "extract_args" else SELECT_FEATURES
                if scorer.features != expected:
                    raise ValueError(f"{node} was trained on other features than this version computes")
        except FileNotFoundError:
            raise ConfigError(f"the escalation scorer {path} does not exist", hint=rebuild) from None
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"the escalation scorer {path} cannot be read: {exc}", hint=rebuild) from None
        return cls(nodes, document.get("trained_on") or {}, path)


@cache
def default_scorer() -> EscalationScorer:
    """The scorer shipped with tierflow (trained on its own paired runs)."""
    return EscalationScorer.load(SCORER_FILE)
