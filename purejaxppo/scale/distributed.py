"""Several processes (hosts) as one JAX runtime, through ``jax.distributed.initialize``.

Every process runs the same command; together their devices form one global mesh over which a
sweep's agents are sharded. Only process 0 writes outputs. Call :func:`initialize` before
anything else touches JAX; on the CPU, processes exchange data through Gloo.

JAX finds the processes itself on a SLURM, Open MPI, Kubernetes or Cloud TPU cluster, and reads
its own ``JAX_COORDINATOR_ADDRESS``; elsewhere the command line names them (``--coordinator
HOST:PORT``, ``--num-processes N``, ``--process-id I``). Only what the user gave is passed on.

JAX 0.10's runtime ends the process with a C++ abort, not a Python exception, when its
``initialization_timeout`` runs out (a coordinator that never answers, processes that never
come) and crashes when process 0's port is taken. So process 0 first checks that its port is
free, and a timer that fires before JAX's own deadline reports a timeout as one line and exits.
Once joined, :func:`check_same_sweep` refuses processes that run different sweeps or counts.
"""

from __future__ import annotations

import atexit
import os
import sys
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

from purejaxppo.errors import DistributedError

if TYPE_CHECKING:
    from purejaxppo.core.config import PPOConfig
    from purejaxppo.scale.plan import SweepPlan

CLUSTERS = "SLURM, Open MPI, Kubernetes or Cloud TPU"
_GRACE_S = 10  # JAX's own deadline comes this long after ours, so ours always reports first


class ProcessSettings(NamedTuple):
    """What the command line gave for ``jax.distributed.initialize``; None: JAX finds it itself."""

    coordinator: str | None
    num_processes: int | None
    process_id: int | None


def detect_cluster() -> tuple[str, int | None] | None:
    """The cluster JAX would find its processes in (name, process count), or None.

    JAX's own detectors, as ``jax.distributed.initialize`` runs them (it exposes them no other way);
    a count that cannot be read is None.
    """
    import warnings

    try:
        from jax._src.clusters import ClusterEnv
    except ImportError:  # a JAX that moved them: the flags still work
        return None
    with warnings.catch_warnings():  # "Kubernetes detected, but the kubernetes package is not installed"
        warnings.simplefilter("ignore")
        for env in ClusterEnv._cluster_types:
            try:
                if env.opt_in_only_method or not env.is_env_present():
                    continue
            except Exception:  # noqa: BLE001 - a detector that fails has not found its cluster
                continue
            try:
                return env.__name__, int(env.get_process_count())
            except Exception:  # noqa: BLE001 - JAX will ask again, and fail in its own words
                return env.__name__, None
    return None


def resolve(coordinator: str | None, num_processes: int | None, process_id: int | None,
            environ=os.environ, detect: Callable[[], Any] = detect_cluster) -> ProcessSettings | None:
    """The settings to join several processes with; None for a single process.

    Several processes when any flag is given, when JAX's ``JAX_COORDINATOR_ADDRESS`` is set, or on a
    cluster of more than one process. Without a cluster, all three settings are needed.
    """
    env_address = environ.get("JAX_COORDINATOR_ADDRESS") or None
    if coordinator is None and num_processes is None and process_id is None and env_address is None:
        cluster = detect()
        return ProcessSettings(None, None, None) if cluster and cluster[1] != 1 else None
    for name, address in (("--coordinator", coordinator), ("JAX_COORDINATOR_ADDRESS (read by JAX)", env_address)):
        host, _, port = (address or "h:0").rpartition(":")
        if not host or not port.isdigit():
            raise DistributedError(f"{name}: {address!r} is not HOST:PORT; accepted: e.g. 10.0.0.1:1234")
    if num_processes is not None and num_processes < 1:
        raise DistributedError(f"--num-processes: {num_processes}; accepted: an integer >= 1")
    if process_id is not None and not 0 <= process_id < (num_processes or sys.maxsize):
        top = f"0 to {num_processes - 1}" if num_processes else "an integer >= 0"
        raise DistributedError(f"--process-id: {process_id}; accepted: {top}")
    missing = [flag for flag, value in (("--coordinator", coordinator or env_address),
                                        ("--num-processes", num_processes), ("--process-id", process_id))
               if value is None]
    if missing and detect() is None:
        raise DistributedError(
            f"{' and '.join(missing)} missing: no {CLUSTERS} cluster was found to supply them; accepted: "
            "--coordinator HOST:PORT (or JAX's JAX_COORDINATOR_ADDRESS), --num-processes N and --process-id I "
            "together"
        )
    return ProcessSettings(coordinator, num_processes, process_id)


def initialize(settings: ProcessSettings, timeout: int = 60, prefix: str = "error: ") -> None:
    """Join the processes through ``jax.distributed.initialize``, or stop with one line.

    Processes that have not all joined after ``timeout`` seconds end this one: ``prefix`` and the
    reason go to stderr as one line, and the exit status is 2 (JAX would abort a moment later).
    """
    import threading

    import jax

    check_port_free(settings)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # used by CPU devices only

    def give_up() -> None:
        os.write(2, f"{prefix}{timed_out(settings, timeout)}\n".encode())
        os._exit(2)  # the main thread waits inside JAX's C++ code, where no exception reaches it

    timer = threading.Timer(timeout, give_up)
    timer.daemon = True
    timer.start()
    try:
        jax.distributed.initialize(
            coordinator_address=settings.coordinator,
            num_processes=settings.num_processes,
            process_id=settings.process_id,
            initialization_timeout=timeout + _GRACE_S,
        )
    except Exception as e:  # noqa: BLE001 - JAX checks what a cluster supplied in Python, raising several types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise DistributedError(f"{_who(settings)} could not start JAX's distributed runtime: {first}") from None
    finally:
        timer.cancel()
    global _unchecked
    _unchecked = True
    atexit.register(_compare_at_exit)  # after JAX's own exit hook, so it runs before JAX shuts down


def _who(settings: ProcessSettings) -> str:
    if settings.process_id is None:
        return "this process"
    of = f" of {settings.num_processes}" if settings.num_processes else ""
    return f"process {settings.process_id}{of}"


def _address(settings: ProcessSettings) -> str | None:
    return settings.coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS") or None


def check_port_free(settings: ProcessSettings) -> None:
    """Process 0 refuses, in one line, a coordinator port already taken (JAX's service would crash)."""
    import socket

    address = _address(settings)
    if settings.process_id != 0 or address is None or os.environ.get("JAX_COORDINATOR_BIND_ADDRESS"):
        return
    port = int(address.rpartition(":")[2])
    try:
        if socket.has_dualstack_ipv6():  # where JAX's service binds: [::]:PORT
            probe = socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True)
        else:
            probe = socket.create_server(("", port))
    except OSError as e:
        why = os.strerror(e.errno) if e.errno else str(e)
        raise DistributedError(
            f"process 0 cannot listen on port {port} of the coordinator {address} ({why}); choose a free port"
        ) from None
    probe.close()


def timed_out(settings: ProcessSettings, timeout: int) -> str:
    """Why the processes did not all join within ``timeout`` seconds, as one sentence."""
    address = _address(settings)
    if address is None:  # the cluster named it, inside jax.distributed.initialize
        return (f"{_who(settings)} and the other processes of the {CLUSTERS} job did not all join within {timeout} s; "
                "check that every process of the job started, or raise --coordinator-timeout")
    hint = "start every process with the same --coordinator and --num-processes, or raise --coordinator-timeout"
    if settings.process_id == 0:
        return (f"{_who(settings)} waited {timeout} s at {address} for the other processes, which did not all "
                f"come; {hint}")
    if not _answers(address):
        return (f"{_who(settings)} could not join the coordinator at {address} within {timeout} s (nothing accepts "
                "connections there); check --coordinator and that process 0 is running")
    return (f"{_who(settings)} reached the coordinator at {address}, but not every process joined within "
            f"{timeout} s; {hint}")


def _answers(address: str) -> bool:
    """Whether something accepts a TCP connection at ``address`` now."""
    import socket

    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=2.0).close()
    except OSError:
        return False
    return True


def check_same_sweep(config: PPOConfig, plan: SweepPlan, settings: ProcessSettings, pbt: Any = None) -> None:
    """Refuse, on every process alike, processes that run different sweeps or counts of processes.

    Each process hashes its sweep (the count it was given, the config, the plan's settings and
    seeds, its PBT settings ``pbt``: a PBTConfig or None) and ``multihost_utils.process_allgather`` compares the hashes; only when they differ are
    the sweeps themselves gathered, to name what differs. Every process calls this once after
    :func:`initialize`; one that exits before it takes part at exit as stopped, so that the others
    stop too instead of waiting for it.
    """
    import json

    sweep = {"--num-processes": settings.num_processes, "config": config.to_dict(), "settings": plan.settings,
             "--num-seeds": plan.num_seeds, "--pbt": None if pbt is None else list(pbt)}
    problem = _compare(json.dumps(sweep, sort_keys=True, default=repr).encode())
    if problem is not None:
        raise DistributedError(problem)


_unchecked = False  # joined, and not yet compared its sweep with the others'


def _compare(doc: bytes) -> str | None:
    """Every process's sweep (``doc``; empty: this process stopped) against process 0's: how they
    differ, as one sentence, or None when they do not."""
    global _unchecked
    import hashlib
    import json

    import jax
    import numpy as np
    from jax.experimental import multihost_utils

    _unchecked = False
    if jax.process_count() == 1:
        return None
    try:
        mine = np.array([len(doc), *np.frombuffer(hashlib.sha256(doc).digest()[:8], np.uint32)], np.uint32)
        table = np.asarray(multihost_utils.process_allgather(mine))  # [P, 3]: length, fingerprint
        if (table == table[0]).all():
            return None
        # every process sees the same table, so all of them take this second step together
        padded = np.frombuffer(doc.ljust(int(table[:, 0].max()), b"\0"), np.uint8)
        docs = np.asarray(multihost_utils.process_allgather(padded))  # [P, longest]
    except Exception as e:  # noqa: BLE001 - a process that vanished: JAX raises after Gloo's timeout
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        return (f"process {jax.process_index()} could not compare its sweep with the other processes' ({first}); "
                "check the other processes' errors")
    sweeps = [json.loads(bytes(row[:size])) if size else None for row, size in zip(docs, table[:, 0])]
    return describe_mismatch(sweeps, [f"{a:08x}{b:08x}" for a, b in table[:, 1:]])


def _compare_at_exit() -> None:
    """A process that stops before comparing its sweep (a mistake on its command line) still takes
    part, as stopped, so that the others stop with one line instead of waiting for it."""
    if _unchecked:
        try:
            _compare(b"")
        except Exception:  # noqa: BLE001 - this process has already said why it stopped
            pass


def describe_mismatch(sweeps: list[dict | None], fingerprints: list[str]) -> str:
    """One sentence naming the first process whose sweep differs from process 0's, and how.

    A sweep of None is a process that stopped before its sweep began."""
    p = next(i for i, sweep in enumerate(sweeps) if sweep is None or sweep != sweeps[0])
    if sweeps[p] is None:
        return f"process {p} stopped before its sweep began; its own error says why"
    ours, theirs = sweeps[p], sweeps[0]
    if ours.get("--num-processes") != theirs.get("--num-processes"):
        return (f"process {p} was started with --num-processes {ours.get('--num-processes')}, process 0 with "
                f"{theirs.get('--num-processes')}; start every process with the same --num-processes")
    ours_config, theirs_config = ours.get("config", {}), theirs.get("config", {})
    fields = [f for f in sorted(set(ours_config) | set(theirs_config)) if ours_config.get(f) != theirs_config.get(f)]
    if fields:
        field = fields[0]
        what = f"its config field {field} is {ours_config.get(field)!r}, process 0's {theirs_config.get(field)!r}"
    elif ours.get("--num-seeds") != theirs.get("--num-seeds"):
        what = f"its --num-seeds is {ours.get('--num-seeds')}, process 0's {theirs.get('--num-seeds')}"
    elif ours.get("--pbt") != theirs.get("--pbt"):
        what = (f"its --pbt settings (interval, fraction, resample prob., factors, populations) are "
                f"{ours.get('--pbt')}, process 0's {theirs.get('--pbt')}")
    else:
        what = "its --grid/--sample settings differ"
    return (f"process {p} runs a different sweep than process 0 (sweep fingerprint {fingerprints[p]}, process 0's "
            f"{fingerprints[0]}): {what}; start every process with the same command")
