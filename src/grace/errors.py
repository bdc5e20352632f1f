"""User-facing errors.

A ``GraceInputError`` is raised for anything the user can fix (a bad data line, an unknown
model, a missing file). The CLI prints its one-line message to stderr and exits with code 2,
with no traceback; library users catch it like any other ``ValueError``.
"""


class GraceInputError(ValueError):
    """Bad input from the user: the message names the file, line and field where it can."""

    exit_code = 2


class NonFiniteTrainingError(GraceInputError):
    """A training step's loss or gradient norm was nan or inf. The run stops before that
    optimizer step (so the weights stay finite) and saves no checkpoint of it; the message names
    the step. The CLI prints it in one line, like any ``GraceInputError``, with exit code 3."""

    exit_code = 3
