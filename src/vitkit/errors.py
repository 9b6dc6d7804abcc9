"""The errors vitkit raises for things a user can fix, and the exit code each one means on the command line.

`UsageError` (exit 2): what was asked is wrong or ambiguous (a bad path, config value, device or option).
`RunFailure` (exit 1): what was asked is fine, but the run could not do it (the run directory is in use,
training diverged, the disk is full). Both carry a message that says what to do; the CLI prints it on one
line without a traceback.
"""

from __future__ import annotations


class VitkitError(Exception):
    """Base of the errors the CLI reports as one line; `exit_code` is the process exit status."""

    exit_code = 1


class UsageError(VitkitError, ValueError):
    """A mistake in what was asked: a value, path, option or combination vitkit cannot do exactly."""

    exit_code = 2


class RunFailure(VitkitError, RuntimeError):
    """The run could not go on (a locked run directory, too many non-finite steps, a failed save)."""

    exit_code = 1


def require(condition: bool, message: str) -> None:
    """Raise `UsageError(message)` unless `condition`: config values are validated where they are read."""
    if not condition:
        raise UsageError(message)
