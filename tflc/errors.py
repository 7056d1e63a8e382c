"""One exception family for everything a user can get wrong or a stage can fail at.

Each error carries the process exit code the CLI uses, so library code raises and the CLI only
prints: 2 for bad input or usage, 1 for a pipeline failure, 3 for a gate that was not met.
The message is the single line the user sees: it names the file or field, what was expected, and
what to do.
"""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (TF-MOT's and the quantizers' run to
    paragraphs), or its type's name when it has none: what fits in a one-line error."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class TflcError(Exception):
    """Base class: a failure with a user-facing one-line message and an exit code."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class BadInput(TflcError):
    """The user's input (a file, a flag, a config field) cannot be used as given."""

    exit_code = 2


class PipelineError(TflcError):
    """A stage failed on valid input (the converter, an interpreter, a device)."""

    exit_code = 1


class GateFailed(TflcError):
    """A result was produced but misses a limit the user set (accuracy drop, coverage, budget)."""

    exit_code = 3
