"""How long the last compile of the same program took, said before a long compile starts.

A Brax run can compile for a minute with nothing to show. Before compiling, the command line
prints what it compiles and, when these settings were compiled before, how long that took:
``compiling the training program (the last launch of these settings compiled in 55.2 s)``. The
seconds are kept in ``compile_times.json`` in the compilation cache's folder
(:mod:`purejaxppo.run.cache`), one entry per program (its name, which holds the chunk size), backend,
program layout and configuration (without ``total_timesteps`` and ``seed``, which do not change a
chunk's program); with the cache off, nothing is kept and the line says only what compiles. A file
that cannot be read or written is ignored: the record only informs.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import jax

FILE = "compile_times.json"
KEEP = 200  # entries kept, the most recent


def _path() -> str | None:
    folder = jax.config.jax_compilation_cache_dir
    return os.path.join(folder, FILE) if folder else None


def program_id(name: str, config: Any, tuning: Any = None) -> str:
    """The entry of program ``name`` for ``config`` (a PPOConfig) with the layout ``tuning`` on this backend."""
    settings = {k: v for k, v in config.to_dict().items() if k not in ("total_timesteps", "seed")}
    text = json.dumps([name, jax.default_backend(), jax.device_count(), repr(tuning), settings], sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _read(path: str) -> dict[str, float]:
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return {k: float(v) for k, v in data.items() if isinstance(v, (int, float))} if isinstance(data, dict) else {}


def last_seconds(entry: str) -> float | None:
    """The seconds the last recorded compile of ``entry`` took, or None."""
    path = _path()
    return None if path is None else _read(path).get(entry)


def remember(entry: str, seconds: float) -> None:
    """Record that compiling ``entry`` took ``seconds`` (replacing an older record)."""
    path = _path()
    if path is None:
        return
    data = _read(path)
    data.pop(entry, None)
    data[entry] = round(float(seconds), 1)
    data = dict(list(data.items())[-KEEP:])
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except OSError:
        pass


def compiling_line(what: str, entry: str) -> str:
    """``compiling WHAT ...`` with the last recorded time of ``entry`` when there is one."""
    seconds = last_seconds(entry)
    if seconds is None:
        return f"compiling {what} ..."
    return f"compiling {what} (the last launch of these settings compiled in {seconds:.1f} s) ..."
