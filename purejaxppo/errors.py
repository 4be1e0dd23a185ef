"""Errors that reach the user as one line (the command line prints them and exits with status 2)."""


class RunError(Exception):
    """A run cannot start or continue as asked."""
