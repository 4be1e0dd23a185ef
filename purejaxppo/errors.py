"""Errors that reach the user as one line.

Every error the package raises for a mistake in its input derives from :class:`PurejaxppoError`;
the command line catches that one type, prints the message as one line and exits with status 2.
"""


class PurejaxppoError(Exception):
    """A request that cannot be carried out; the message is one sentence for the user."""


class ConfigError(PurejaxppoError, ValueError):
    """A setting that cannot be used: names the field, the value and what is accepted."""


class RunError(PurejaxppoError):
    """A run cannot start or continue as asked."""


class CheckpointError(PurejaxppoError):
    """No usable checkpoint or run folder."""


class MissingExtra(PurejaxppoError):
    """An optional backend was asked for but its package is not installed."""


class DistributedError(PurejaxppoError):
    """Bad multi-process settings or an unreachable coordinator."""


class UsageError(PurejaxppoError):
    """A mistake on the command line."""
