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

from purejaxppo.errors import DistributedError


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
    sock = _connect(address, timeout)
    if sock is None:
        return False
    sock.close()
    return True


def _connect(address: str, timeout: float):
    """A TCP connection to ``address``, retried until ``timeout`` seconds have passed; None if none."""
    import socket
    import time

    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout
    while True:
        try:
            return socket.create_connection((host, int(port)), timeout=min(2.0, max(timeout, 0.1)))
        except OSError:
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.2)


# ---- roll call ---------------------------------------------------------------------------
# JAX's coordination service aborts the whole process (no Python exception) when a process
# cannot connect or when process 0 waits in vain for the others. So before JAX starts, the
# processes meet on the coordinator's port over plain TCP: process 0 listens there, every
# other process connects and says who it is, and process 0 answers "go" once all have come,
# or each side fails with a one-line error when its timeout runs out. Process 0 then closes
# its listener and starts JAX's service on the same port.
_HELLO = "purejaxppo-join"


def roll_call(settings: ProcessSettings, timeout: float) -> None:
    """Meet every process at the coordinator's port before JAX's runtime starts (see above)."""
    if settings.num_processes == 1:
        return
    if settings.process_id == 0:
        _gather_peers(settings, timeout)
    else:
        _join(settings, timeout)


def _gather_peers(settings: ProcessSettings, timeout: float) -> None:
    import socket
    import time

    port = int(settings.coordinator.rpartition(":")[2])
    try:
        if socket.has_dualstack_ipv6():
            server = socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True)
        else:
            server = socket.create_server(("", port))
    except OSError as e:
        raise DistributedError(
            f"process 0 cannot listen on port {port} of --coordinator {settings.coordinator} ({e.strerror}); "
            "choose a free port"
        ) from None
    joined: dict[int, socket.socket] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(joined) < settings.num_processes - 1:
            left = deadline - time.monotonic()
            if left <= 0:
                missing = [str(i) for i in range(1, settings.num_processes) if i not in joined]
                raise DistributedError(
                    f"process 0 waited {timeout:g} s at {settings.coordinator} for process(es) {', '.join(missing)} "
                    f"of {settings.num_processes}, which did not come; start every process with the same "
                    "--coordinator and --num-processes, or raise --coordinator-timeout"
                )
            server.settimeout(min(left, 1.0))
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.settimeout(5.0)
            try:
                words = conn.makefile("r").readline().split()
            except OSError:
                conn.close()
                continue
            if len(words) != 3 or words[0] != _HELLO or not all(w.isdigit() for w in words[1:]):
                conn.close()  # a port scanner, a stray probe: not one of ours
                continue
            pid, count = int(words[1]), int(words[2])
            problem = None
            if count != settings.num_processes:
                problem = f"it was started with --num-processes {count}, process 0 with {settings.num_processes}"
            elif pid in joined:
                problem = f"process id {pid} is already taken"
            if problem:
                conn.sendall(f"no {problem}\n".encode())
                conn.close()
                continue
            joined[pid] = conn
        server.close()  # before "go": JAX's service will listen on this port next
        for conn in joined.values():
            conn.sendall(b"go\n")
        for conn in joined.values():  # let each peer close first, so the port is not held
            try:
                conn.recv(1)
            except OSError:
                pass
    finally:
        server.close()
        for conn in joined.values():
            conn.close()


def _join(settings: ProcessSettings, timeout: float) -> None:
    import time

    start = time.monotonic()
    sock = _connect(settings.coordinator, timeout)
    if sock is None:
        raise DistributedError(
            f"process {settings.process_id} of {settings.num_processes} could not join the coordinator at "
            f"{settings.coordinator} within {timeout:g} s (nothing accepts connections there); check --coordinator "
            "and that process 0 is running"
        )
    with sock:
        sock.sendall(f"{_HELLO} {settings.process_id} {settings.num_processes}\n".encode())
        sock.settimeout(max(timeout - (time.monotonic() - start), 1.0))
        try:
            answer = sock.makefile("r").readline().strip()
        except OSError:  # a timeout included
            answer = ""
    if answer.startswith("no "):
        raise DistributedError(f"process {settings.process_id} was refused by process 0: {answer[3:]}")
    if answer != "go":
        raise DistributedError(
            f"process {settings.process_id} of {settings.num_processes} reached {settings.coordinator} but was not "
            f"let in within {timeout:g} s; check that process 0 of this run listens there and that every process "
            "uses the same --num-processes"
        )
    # JAX's service on process 0 starts a moment after "go"; wait until it accepts connections
    if not wait_for_coordinator(settings.coordinator, timeout):
        raise DistributedError(f"process {settings.process_id}: the coordinator at {settings.coordinator} went away")


def initialize(settings: ProcessSettings, timeout: int = 60) -> None:
    """Join the processes; missing processes or an unreachable coordinator fail after ``timeout`` s.

    JAX's runtime aborts the whole process when a connection fails, so the processes first
    meet over plain TCP (:func:`roll_call`) and fail there with a clear error instead.
    """
    import jax

    roll_call(settings, timeout)
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
