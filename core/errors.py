"""The exceptions tierflow raises, in one place.

Three families, after pydantic-ai:

* ``TierflowError`` and its subclasses: a runtime or configuration failure that stops the
  current command. Each carries ``hint``, the setting, file or command that fixes it, and
  ``exit_code``, the status the command ends with: 1, or 2 for a usage error
  (``TaskInputError``, ``GraphError``).
* ``ToolError``: a tool refused its input. It is model-caused, so it is recorded in the
  trace and shown to the model, never raised out of a run.
* Programming mistakes (a tool without type hints, an unknown node name) raise the usual
  ``TypeError``/``ValueError`` at build time.
"""

from __future__ import annotations

from pydantic import ValidationError

__all__ = [
    "describe_validation_error",
    "TierflowError",
    "ConfigError",
    "ContextOverflowError",
    "TaskInputError",
    "ModelNotFoundError",
    "ModelFileError",
    "ModelPullError",
    "LLMUnavailableError",
    "ServerStartError",
    "SchemaError",
    "RunNotFoundError",
    "BudgetExceededError",
    "GraphError",
    "StepOutputError",
    "LocalOnlyError",
    "RunCancelledError",
    "ToolError",
    "SandboxError",
]


class TierflowError(Exception):
    """A failure that stops the current command. ``hint`` says what to do about it;
    ``exit_code`` is the command's exit status: 1, or 2 for a usage error (bad input)."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n{self.hint}" if self.hint else self.message


class ConfigError(TierflowError):
    """A setting has a value tierflow cannot use."""


class TaskInputError(TierflowError):
    """The task given to a run is unusable (empty, too long)."""

    exit_code = 2


class ModelNotFoundError(TierflowError):
    """A model name is not in the catalog, or a GGUF path does not exist."""


class ModelFileError(TierflowError):
    """A model file exists but cannot be loaded (truncated, corrupt, not GGUF)."""


class ModelPullError(TierflowError):
    """Fetching or assembling a catalog model failed; no partial file is left behind."""


class LLMUnavailableError(TierflowError):
    """The LLM endpoint could not be reached or refused the request."""


class ContextOverflowError(TierflowError):
    """A prompt does not fit the model's context window. A tiered step escalates it to the
    LLM; elsewhere the run fails with this error."""


class ServerStartError(TierflowError):
    """The embedded llama.cpp server did not become healthy."""


class ProcessStartError(TierflowError):
    """A helper process (a document reader, a job's worker) stopped before it was ready:
    most often a script with no ``if __name__ == "__main__":`` guard, which Python's
    ``spawn`` start method runs again in the new process."""


MAIN_GUARD_HINT = (
    "Python starts a job's helper processes by importing your main script again, so a script "
    'that runs a job must do it under `if __name__ == "__main__":` (put its code in a function '
    'called there; see docs/batch.md, "From Python").'
)


def refuse_while_a_process_starts(what: str) -> None:
    """Raise ``ProcessStartError`` when called while this process is a new ``spawn`` process
    importing the parent's main script: ``what`` would otherwise run again in every helper
    process (a job inside each of the job's own readers and workers)."""
    import multiprocessing

    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise ProcessStartError(
            f"{what} was called while a new helper process was starting: its main script runs "
            "it at import, with no main guard.",
            hint=MAIN_GUARD_HINT,
        )


class SchemaError(TierflowError):
    """A JSON schema cannot be turned into a llama.cpp grammar."""


class RunNotFoundError(TierflowError):
    """No stored run matches the given id."""


class BudgetExceededError(TierflowError):
    """The next LLM call would take the run past its token or cost cap; the run stops
    with status ``budget_exceeded`` and keeps everything done so far."""


class GraphError(TierflowError):
    """A graph cannot be run as given: a module path that does not import, an attribute
    that is not a compiled graph, input that does not match its input schema, or a policy
    that names a node the graph does not have."""

    exit_code = 2


class StepOutputError(TierflowError):
    """A step got no usable output from the last tier it could use (the reason is the
    validation error); the run fails with it."""


class RunNotResumableError(TierflowError):
    """A run cannot continue: no checkpoint, nothing left to do, or a graph without one."""


class RunCancelledError(TierflowError):
    """The run was cancelled (``cancel.set()``) and stopped before its next step."""


class LocalOnlyError(TierflowError):
    """Something would send a local-only run's data to the LLM (e.g. replaying its call)."""


class ToolError(Exception):
    """A tool refused its arguments. Recorded and shown to the model, never raised out of a run."""


class SandboxError(ToolError):
    """A tool was asked to reach outside its workspace."""


def describe_validation_error(exc: ValidationError, whole: str = "value") -> str:
    """``field.path: message; ...`` for people and models; ``whole`` names a top-level error."""
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or whole}: {err['msg']}" for err in exc.errors())
