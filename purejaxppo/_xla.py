"""XLA settings applied when purejaxppo is imported, before JAX starts its CPU backend.

XLA's CPU runtime can run one operation on several threads of an Eigen thread pool. On
vmapped training programs (sweeps, seeds) that pool has been seen to stall for good on
small machines: the program never finishes and every thread sits idle. Running each
operation on one thread avoids it and costs nothing measurable here, because a PPO
program is a long chain of small operations (see README, "Speed"). Independent operations
still run in parallel.

Set ``PUREJAXPPO_EIGEN_THREADS=1`` to keep XLA's default, or put your own
``--xla_cpu_multi_thread_eigen`` in ``XLA_FLAGS``; either is respected.
"""

from __future__ import annotations

import os

EIGEN_FLAG = "--xla_cpu_multi_thread_eigen"


def configure_xla(environ: dict[str, str] | os._Environ = os.environ) -> bool:
    """Add ``--xla_cpu_multi_thread_eigen=false`` to ``XLA_FLAGS`` unless told otherwise.

    Returns whether the flag was added. It only takes effect if JAX has not yet created its
    CPU backend in this process (that happens on the first computation, not on import).
    """
    if environ.get("PUREJAXPPO_EIGEN_THREADS", "") not in ("", "0"):
        return False
    flags = environ.get("XLA_FLAGS", "")
    if EIGEN_FLAG in flags:
        return False
    environ["XLA_FLAGS"] = f"{flags} {EIGEN_FLAG}=false".strip()
    return True
