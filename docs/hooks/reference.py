"""An mkdocs hook that writes reference material from the code and the recorded results at
build time, so that it cannot drift from them:

* ``settings.md`` from ``tierflow.settings.Settings.model_fields`` (nested models such as
  the policy are expanded, their variables joined with ``__``);
* ``cli.md`` from the typer app ``tierflow.cli.app``, walked as the click command typer
  builds from it;
* the results tables of ``evaluations.md``, from ``evals/results/*.json`` by the code that
  writes the README's results section (``tierflow.evals.readme.results_section``).

It also teaches Markdown the docstrings' doctest examples (``>>>`` lines), which would
otherwise render as nested block quotes in the API reference.

Registered under ``hooks:`` in mkdocs.yml. The two pages exist only in the built site.
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from markdown import Extension, Markdown
from markdown.preprocessors import Preprocessor
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

ENV_PREFIX = "TIERFLOW_"
NESTED = "__"


# Markdown helpers ------------------------------------------------------------------------------
def cell(text: str) -> str:
    """Prose for a table cell: one line, with Markdown's and HTML's special characters escaped."""
    text = " ".join(text.split())
    for char in "\\`*_[]|":
        text = text.replace(char, "\\" + char)
    return text.replace("<", "&lt;").replace(">", "&gt;")


def code(text: str) -> str:
    """Inline code for a table cell (Markdown's tables keep a pipe inside a code span)."""
    text = " ".join(text.split())
    fence = "``" if "`" in text else "`"
    return f"{fence}{text}{fence}" if text else ""


# settings.md -----------------------------------------------------------------------------------
def type_name(annotation: Any) -> str:
    """A field's type as a reader writes it: ``int | None``, ``'auto' | 'on' | 'off'``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "None"
    if annotation is SecretStr:
        return "secret str"
    if origin is typing.Literal:
        return " | ".join(repr(arg) for arg in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(arg) for arg in args)
    if origin is not None:
        inner = ", ".join(type_name(arg) for arg in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if isinstance(annotation, type):
        return "path" if issubclass(annotation, Path) else annotation.__name__
    return str(annotation)


def default_text(info: FieldInfo) -> str:
    """The default as a table cell: Python's repr as code, or plain words."""
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
        return "" if isinstance(value, BaseModel) else code(repr(value))
    if info.default is PydanticUndefined:
        return "(required)"
    if info.default is None:
        return "unset"
    value = info.default.value if isinstance(info.default, enum.Enum) else info.default
    return code(repr(value))


def constraints(info: FieldInfo) -> list[str]:
    """The bounds pydantic enforces (``ge=512``), as ``≥ 512``."""
    signs = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
    found = []
    for item in info.metadata:
        for attribute, sign in signs.items():
            value = getattr(item, attribute, None)
            if value is not None:
                found.append(f"{sign} {value}")
    return found


def nested_model(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def setting_rows(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, str, str, str, str]]:
    """(field, variable, type, default, description) per field, nested models expanded."""
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        variable = ENV_PREFIX + path.upper()
        inner = nested_model(info.annotation)
        if inner is not None:
            yield from setting_rows(inner, prefix=path + NESTED)
            continue
        described = [info.description or ""] + constraints(info)
        description = "; ".join(part for part in described if part)
        yield path.replace(NESTED, "."), variable, type_name(info.annotation), default_text(info), description


SETTINGS_INTRO = """\
# Settings

tierflow reads its settings once, at the entry point (the command line, the console, a
batch job), into one object, `tierflow.Settings`, and passes it down. Library code never
reads the environment itself.

Where a setting comes from, highest first:

1. keyword arguments: `tierflow.load_settings(slm_model="...")`, `tierflow.Settings(...)`;
2. environment variables: `TIERFLOW_` and the field name in capitals
   (`TIERFLOW_SLM_MODEL`); a field of a nested setting is joined with `__`
   (`TIERFLOW_POLICY__DEFAULT=slm`);
3. a TOML file: `--config FILE`, else `TIERFLOW_CONFIG`, else
   `~/.config/tierflow/config.toml` when it exists. Keys are the field names; nested
   settings are tables (`[policy]`).

`tierflow config` prints the effective values with secrets masked. A `TIERFLOW_*`
variable that sets nothing is reported with the setting it most likely meant.

Files go, by default (on Linux): the trace database, checkpoints, server logs and the
memory under the data directory `~/.local/share/tierflow`; downloaded models under
`~/.cache/tierflow/models`.

More variables are read that are not fields: `TIERFLOW_CONFIG` (the TOML file),
`TIERFLOW_UI_TOKEN` (the console's access token, see [the console](console.md)) and
`TIERFLOW_OTEL_CONTENT` (see [Privacy](concepts/privacy.md#telemetry)).
`OPENAI_API_KEY` and `OPENAI_BASE_URL` stand in for `llm_api_key` and `llm_base_url` when
those are unset, and `TIERFLOW_LLM_TEMPERATURE=default` sends no temperature at all.

The policy also takes one variable per node of your graph:
`TIERFLOW_POLICY__<NODE>=slm|llm|tiered` (for example `TIERFLOW_POLICY__ANSWER=llm`)
overrides that node; see [Policy](concepts/policy.md).

This page is generated from the settings model when the site is built.

"""


def settings_page() -> str:
    from tierflow.settings import Settings

    lines = [SETTINGS_INTRO, "| setting | variable | type | default | meaning |", "|---|---|---|---|---|"]
    for name, variable, kind, default, description in setting_rows(Settings):
        row = [code(name), code(variable), code(kind), default, cell(description)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


# cli.md ----------------------------------------------------------------------------------------
CLI_INTRO = """\
# Command line

Every command of `tierflow`, with its options, as `tierflow COMMAND --help` prints them.
This page is generated from the commands when the site is built.

Commands print answers and reports on stdout and progress on stderr; `--json` puts exactly
one JSON document on stdout. Exit status: 0 on success; 1 when a run failed or hit its
budget; 2 for unusable input (an empty task, a graph that does not load, input that does
not fit it). Errors say what happened and what to do, never with a traceback.

"""


def visible(command: Any) -> dict[str, Any]:
    """A group's sub-commands as ``--help`` lists them (none for a plain command)."""
    children = getattr(command, "commands", None) or {}
    return {name: child for name, child in children.items() if not getattr(child, "hidden", False)}


def commands(command: Any, path: list[str], parent: Any = None) -> Iterator[tuple[list[str], Any, Any]]:
    """(path, command, context) for ``command`` and every visible sub-command, depth first."""
    context = command.context_class(command, info_name=path[-1], parent=parent)
    yield path, command, context
    for name, child in visible(command).items():
        yield from commands(child, [*path, name], context)


def command_section(path: list[str], command: Any, context: Any) -> list[str]:
    level = "##" if len(path) <= 2 else "###"
    lines = [f"{level} `{' '.join(path)}`", ""]
    if command.help:
        lines += [" ".join(paragraph.split()) + "\n" for paragraph in command.help.split("\n\n")]
    lines += ["```text", command.get_usage(context), "```", ""]
    children = visible(command)
    if children:
        lines += ["| command | what it does |", "|---|---|"]
        for name, child in children.items():
            summary = child.get_short_help_str(limit=120)
            lines.append(f"| {code(' '.join([*path, name]))} | {cell(summary)} |")
        lines.append("")
    rows = []
    for param in command.get_params(context):
        record = param.get_help_record(context)
        if record is None or param.name == "help":
            continue
        name, help_text = record
        rows.append(f"| {code(name)} | {cell(help_text)} |")
    if rows:
        lines += ["| argument or option | meaning |", "|---|---|", *rows, ""]
    return lines


def cli_page() -> str:
    import typer
    from tierflow.cli import app

    root = typer.main.get_command(app)
    lines = [CLI_INTRO]
    for path, command, context in commands(root, ["tierflow"]):
        lines += command_section(path, command, context)
    return "\n".join(lines)


# evaluations.md's results ----------------------------------------------------------------------
RESULTS_PAGE = "evaluations.md"
RESULTS_MARKER = "<!-- results: rendered from evals/results/*.json when the site is built -->"


def results_markdown(config: MkDocsConfig) -> str:
    from tierflow.evals.readme import results_section

    root = Path(config.config_file_path).parent
    return results_section(root / "evals" / "results")


# Doctest examples in docstrings ------------------------------------------------------------------
class DoctestFences(Preprocessor):
    """A run of ``>>>`` lines with the output lines after it (to the next blank line),
    outside fenced code, becomes a ``pycon`` code block."""

    def run(self, lines: list[str]) -> list[str]:
        result: list[str] = []
        fenced, example = False, False
        for line in lines:
            stripped = line.lstrip()
            if stripped.startswith(("```", "~~~")) and not example:
                fenced = not fenced
            starts = not fenced and not example and stripped.startswith(">>> ")
            if starts:
                indent = line[: len(line) - len(stripped)]
                result += ["", f"{indent}```pycon"]
                example = True
            elif example and not stripped:
                result += [f"{indent}```", ""]
                example = False
            result.append(line)
        if example:
            result += [f"{indent}```", ""]
        return result


class DoctestExtension(Extension):
    def extendMarkdown(self, md: Markdown) -> None:  # noqa: N802 - Markdown's method name
        # after whitespace normalization (30), before the fenced code blocks (25)
        md.preprocessors.register(DoctestFences(md), "tierflow_doctest", 27)


@event_priority(100)  # before mkdocstrings reads the extensions
def on_config(config: MkDocsConfig) -> MkDocsConfig:
    config.markdown_extensions.append(DoctestExtension())  # type: ignore[arg-type]
    return config


# The hook --------------------------------------------------------------------------------------
PAGES = {"settings.md": settings_page, "cli.md": cli_page}


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for name, render in PAGES.items():
        files.append(File.generated(config, name, content=render()))
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    if page.file.src_uri != RESULTS_PAGE:
        return markdown
    if RESULTS_MARKER not in markdown:
        raise PluginError(f"docs/{RESULTS_PAGE} lacks the line {RESULTS_MARKER}")
    return markdown.replace(RESULTS_MARKER, results_markdown(config))
