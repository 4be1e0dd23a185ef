"""Several processes (hosts) as one JAX runtime, through ``jax.distributed.initialize``.

Every process runs the same command with its own process id; together their devices form
one global mesh over which a sweep's agents are sharded. Only process 0 writes outputs.

Settings come from the command line (``--coordinator HOST:PORT``, ``--num-processes N``,
``--process-id I``) or from the environment variables ``JAX_COORDINATOR_ADDRESS``,
``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``. Call :func:`initialize` before anything else
touches JAX. On the CPU, processes exchange data through Gloo.
"""

from __future__ import annotations

import os
from typing import NamedTuple


class DistributedError(Exception):
    """Bad multi-process settings or an unreachable coordinator; one line for the user."""


class ProcessSettings(NamedTuple):
    coordinator: str
    num_processes: int
    process_id: int


def resolve(coordinator: str | None, num_processes: int | None, process_id: int | None,
            environ=os.environ) -> ProcessSettings | None:
    """Multi-process settings from flags, else the environment; None for a single process."""
    coordinator = coordinator or environ.get("JAX_COORDINATOR_ADDRESS") or None
    if num_processes is None and environ.get("JAX_NUM_PROCESSES"):
        num_processes = _int(environ["JAX_NUM_PROCESSES"], "JAX_NUM_PROCESSES")
    if process_id is None and environ.get("JAX_PROCESS_ID"):
        process_id = _int(environ["JAX_PROCESS_ID"], "JAX_PROCESS_ID")
    given = [x is not None for x in (coordinator, num_processes, process_id)]
    if not any(given):
        return None
    if not all(given):
        raise DistributedError(
            "--coordinator, --num-processes and --process-id go together (or JAX_COORDINATOR_ADDRESS, "
            "JAX_NUM_PROCESSES and JAX_PROCESS_ID); accepted: all three or none"
        )
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit():
        raise DistributedError(f"--coordinator: {coordinator!r} is not HOST:PORT; accepted: e.g. 10.0.0.1:1234")
    if num_processes < 1:
        raise DistributedError(f"--num-processes: {num_processes}; accepted: an integer >= 1")
    if not 0 <= process_id < num_processes:
        raise DistributedError(f"--process-id: {process_id}; accepted: 0 to {num_processes - 1}")
    return ProcessSettings(coordinator, num_processes, process_id)


def _int(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DistributedError(f"{name}: {text!r} is not an integer") from None


def wait_for_coordinator(address: str, timeout: float) -> bool:
    """Whether a TCP connection to ``address`` succeeds within ``timeout`` seconds (retrying)."""
    import socket
    import time

    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=min(2.0, max(timeout, 0.1))):
                return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)


def initialize(settings: ProcessSettings, timeout: int = 60) -> None:
    """Join the processes; an unreachable coordinator fails after ``timeout`` seconds.

    JAX's client aborts the whole process when it cannot connect, so processes other than 0
    first check that the coordinator accepts connections, and fail with a clear error if not.
    """
    import jax

    if settings.process_id != 0 and not wait_for_coordinator(settings.coordinator, timeout):
        raise DistributedError(
            f"process {settings.process_id} of {settings.num_processes} could not join the coordinator at "
            f"{settings.coordinator} within {timeout} s (nothing accepts connections there); check --coordinator "
            "and that process 0 is running"
        )

    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # used by CPU devices only
    try:
        jax.distributed.initialize(
            coordinator_address=settings.coordinator,
            num_processes=settings.num_processes,
            process_id=settings.process_id,
            initialization_timeout=timeout,
        )
    except Exception as e:  # noqa: BLE001 - JAX raises several types for a failed connection
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise DistributedError(
            f"process {settings.process_id} of {settings.num_processes} could not join the coordinator at "
            f"{settings.coordinator} within {timeout} s ({first}); check that every process uses the same "
            "--coordinator and --num-processes and that process 0 is running"
        ) from None

