"""Keeping Orbax's and TensorStore's noise off the command line's terminal.

The command line (:func:`purejaxppo.cli.main`) calls :func:`install` once: it prints its own
progress and reports every failure as one line, so the libraries' logs and the tracebacks of
their background threads after a failure it has reported are dropped. A library user's program
keeps its own logging and exception hooks: nothing here runs on import.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any


def install() -> None:
    """Silence absl's logs, drop the unretrieved TensorStore read errors and the closed-event-loop
    tracebacks (each described below); calling it again changes nothing."""
    _quiet_absl()
    _ignore_closed_loop_errors()
    _drop_unretrieved_read_errors()


def _quiet_absl() -> None:
    # Orbax logs every save at INFO through absl, and a failed save as several ERROR records
    # with tracebacks; a run prints its own progress, and reports every failure as one line.
    logging.getLogger("absl").setLevel(logging.CRITICAL)


class _DropUnretrievedReadErrors(logging.Filter):
    """When one read of a damaged checkpoint fails, Orbax gives up on the restore while the other
    TensorStore reads of the same checkpoint fail too; nobody awaits those, and asyncio logs each
    one ("Task exception was never retrieved", or "Future ..." for a bare future, with a
    traceback) whenever the garbage collector meets it. The checkpoint is already reported as
    damaged: those records (and only those, TensorStore's errors) are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.getMessage().startswith(("Task exception was never retrieved",
                                               "Future exception was never retrieved")):
            return True
        exc = record.exc_info[1] if record.exc_info else None
        return exc is None or "tensorstore_spec" not in str(exc)


def _drop_unretrieved_read_errors() -> None:
    log = logging.getLogger("asyncio")
    if not any(isinstance(f, _DropUnretrievedReadErrors) for f in log.filters):
        log.addFilter(_DropUnretrievedReadErrors())


def _closed_loop_error(exc: BaseException | None) -> bool:
    return isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"


def _ignore_closed_loop_errors() -> None:
    """When Orbax gives up on a checkpoint (damaged, or a failed write) it closes its event loop
    while TensorStore still has reads or writes in flight; each of those then fails to call back
    into the closed loop, in a thread, and Python prints its traceback. Those (and only those)
    are dropped; every other thread or unraisable exception goes to the previous hook."""
    if getattr(threading.excepthook, "_purejaxppo", False):
        return
    thread_hook, unraisable_hook = threading.excepthook, sys.unraisablehook

    def on_thread(args: Any) -> None:
        if not _closed_loop_error(args.exc_value):
            thread_hook(args)

    def on_unraisable(unraisable: Any) -> None:
        if not _closed_loop_error(unraisable.exc_value):
            unraisable_hook(unraisable)

    on_thread._purejaxppo = True  # type: ignore[attr-defined]
    threading.excepthook, sys.unraisablehook = on_thread, on_unraisable
