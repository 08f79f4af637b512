"""Prompts are package data (``prompts/NAME.system.j2`` and ``NAME.user.j2``), rendered with
strict undefined variables so a missing value fails loudly instead of vanishing."""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files
from typing import Any

import jinja2
from tierflow.agents.protocol import Message

__all__ = ["render_messages", "render_text"]


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FunctionLoader(_load),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # prompts are plain text for a model, never HTML
        keep_trailing_newline=False,
        trim_blocks=False,
    )


def _load(name: str) -> str:
    return files("tierflow.agents").joinpath("prompts", name).read_text(encoding="utf-8")


def render_messages(name: str, **values: Any) -> list[Message]:
    """The system and user messages of prompt ``name`` filled with ``values``."""
    env = _environment()
    system = env.get_template(f"{name}.system.j2").render(**values).strip()
    user = env.get_template(f"{name}.user.j2").render(**values).strip()
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def render_text(template: str, **values: Any) -> str:
    """One prompt template (a file name under prompts/) filled with ``values``."""
    return _environment().get_template(template).render(**values)
