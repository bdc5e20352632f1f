"""User-facing errors.

A ``GraceInputError`` is raised for anything the user can fix (a bad data line, an unknown
model, a missing file). The CLI prints its one-line message to stderr and exits with code 2,
with no traceback; library users catch it like any other ``ValueError``.
"""


class GraceInputError(ValueError):
    """Bad input from the user: the message names the file, line and field where it can."""

    exit_code = 2
