"""What SIGINT (Ctrl-C) and SIGTERM do while a command runs.

No handler raises an exception: one raised by a signal can land in the middle of a device
transfer or a checkpoint write, or be swallowed where Python ignores exceptions (a
garbage-collection callback). Handlers are installed only in the main thread (elsewhere
signals do not reach Python) and the previous ones are restored on exit.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Handlers:
    """Installs :meth:`_handle` for :data:`SIGNALS` while the block runs."""

    def __init__(self) -> None:
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        raise NotImplementedError

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _exit_now(message: str, signum: int) -> None:
    os.write(2, message.encode())
    os._exit(128 + signum)


class ExitOnSignal(_Handlers):
    """A signal ends the process at once with 128 + its number: for the time before anything
    is written (argument checks, imports, compilation of a sweep)."""

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message

    def _handle(self, signum: int, frame: Any) -> None:
        _exit_now(self.message, signum)


class StopSignals(_Handlers):
    """A signal only records itself in :attr:`signum`; the code in the block stops where its
    state is consistent (a training run: at the end of the current chunk, after a checkpoint).
    A second signal ends the process at once, which is as safe as SIGKILL: checkpoints are
    written to a temporary folder and renamed when complete."""

    def __init__(self, notice: str = "stopping at the end of the current chunk (a checkpoint is saved there)",
                 at_once: str = "stopped at once; the run continues from its last checkpoint with --resume") -> None:
        super().__init__()
        self.signum: int | None = None
        self._notice = f"\n{notice}; signal again to stop at once\n"
        self._at_once = f"\n{at_once}\n"

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            _exit_now(self._at_once, signum)
        self.signum = signum
        os.write(2, self._notice.encode())
