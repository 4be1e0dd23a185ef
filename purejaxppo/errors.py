"""Errors that reach the user as one line.

Every error the package raises for a mistake in its input derives from :class:`PurejaxppoError`;
the command line catches that one type, prints the message as one line and exits with the
error's ``exit_status``: 2 for a bad request, 3 for a run that diverged, 128 + the signal's number
(130 for Ctrl-C, 143 for SIGTERM) for a run stopped by a signal.
"""

from typing import Any


class PurejaxppoError(Exception):
    """A request that cannot be carried out; the message is one sentence for the user."""

    exit_status = 2


class ConfigError(PurejaxppoError, ValueError):
    """A setting that cannot be used: names the field, the value and what is accepted."""


class RunError(PurejaxppoError):
    """A run cannot start or continue as asked."""


class ResumeRefused(RunError):
    """A resume whose config differs from the run's saved one in more than it may: ``changes``
    maps each differing field to ``(run's value, value now)``; ``unsafe`` lists those that no
    resume may change."""

    def __init__(self, message: str, changes: dict[str, tuple[Any, Any]], unsafe: list[str]):
        super().__init__(message)
        self.changes = changes
        self.unsafe = unsafe


class CheckpointError(PurejaxppoError):
    """No usable checkpoint or run folder."""


class MissingExtra(PurejaxppoError):
    """An optional backend was asked for but its package is not installed."""


class DistributedError(PurejaxppoError):
    """Bad multi-process settings or an unreachable coordinator."""


class UsageError(PurejaxppoError):
    """A mistake on the command line."""


class Diverged(PurejaxppoError):
    """Training produced non-finite losses, parameters or returns; the run stopped at the end of
    that chunk, its last finite checkpoint is kept and ``summary.json`` records where it diverged."""

    exit_status = 3

    def __init__(self, message: str, summary: dict[str, Any] | None = None):
        super().__init__(message)
        self.summary = summary


class Interrupted(PurejaxppoError):
    """A run stopped by SIGINT or SIGTERM, after saving a consistent checkpoint (or none)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
        self.exit_status = 128 + signum
