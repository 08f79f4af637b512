"""`import tierflow` is the front door: an explicit __all__, every name importable, nothing
heavy loaded until a name is used."""

import subprocess
import sys

import tierflow


def test_every_public_name_resolves_and_is_documented() -> None:
    assert tierflow.__all__[0] == "__version__"
    for name in tierflow.__all__[1:]:
        value = getattr(tierflow, name)
        if callable(value) and not isinstance(value, type(tierflow.TierChoice)):
            assert value.__doc__, f"tierflow.{name} has no docstring"
    assert sorted(dir(tierflow)) == sorted(tierflow.__all__)


def test_the_kit_the_runner_settings_errors_and_the_tool_decorator_are_exported() -> None:
    for name in ("extract", "choose", "summarize", "reason", "tiered_node", "TierPolicy", "TierContext"):
        assert name in tierflow.__all__
    for name in ("run_graph", "Settings", "load_settings", "tool", "TierflowError", "GraphError"):
        assert name in tierflow.__all__
    assert issubclass(tierflow.BudgetExceededError, tierflow.TierflowError)


def test_the_tool_decorator_keeps_the_function_callable() -> None:
    @tierflow.tool
    def shout(text: str) -> str:
        """Upper-case a text.

        Args:
            text: the text to upper-case
        """
        return text.upper()

    assert shout("hi") == "HI" and shout.name == "shout"
    assert shout.parameters["properties"]["text"]["description"] == "the text to upper-case"
    assert tierflow.ToolRegistry([shout]).get("shout") is shout


def test_importing_tierflow_loads_no_heavy_module() -> None:
    heavy = "('langgraph', 'llama_cpp', 'openai')"
    code = f"import sys, tierflow; print(sorted(m for m in {heavy} if m in sys.modules))"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"


def test_the_command_line_loads_no_optional_extra() -> None:
    # The base install has none of these; the CLI must start without them (a module-level
    # import of an extra broke `tierflow --version` in the wheel check).
    extras = "('llama_cpp', 'chromadb', 'streamlit', 'pandas', 'pypdf', 'docx', 'bs4', 'ray', 'sklearn')"
    code = f"import sys, tierflow.cli; print(sorted(m for m in {extras} if m in sys.modules))"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        tierflow.nonexistent  # noqa: B018
    except AttributeError as exc:
        assert "nonexistent" in str(exc)
    else:
        raise AssertionError("expected AttributeError")
