"""User-facing errors.

Anything a user can cause (bad path, bad option, wrong model width) raises
`MusiclensError`. The CLI turns it into a one-line message and exit code 2,
so users never see a traceback for their own mistakes.
"""


class MusiclensError(Exception):
    """An error caused by input; the CLI prints `error: <message>` and exits 2."""

    exit_code = 2


def require(cond: bool, message: str) -> None:
    """Raise `MusiclensError(message)` unless `cond` holds."""
    if not cond:
        raise MusiclensError(message)
