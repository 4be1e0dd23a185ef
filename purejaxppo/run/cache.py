"""JAX's persistent compilation cache, on by default for the command line.

A second run of the same configuration loads its compiled programs from disk instead of
compiling them again. The cache folder is, in order of precedence: ``--compilation-cache``,
the ``PUREJAXPPO_COMPILATION_CACHE`` environment variable, then
``$XDG_CACHE_HOME/purejaxppo/jax`` (``~/.cache/purejaxppo/jax``). The value ``off`` disables it.
From Python, call :func:`enable_compilation_cache` once before compiling.
"""

from __future__ import annotations

import os
import sys

ENV_VAR = "PUREJAXPPO_COMPILATION_CACHE"
OFF = ("off", "none", "0", "false", "no")


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "purejaxppo", "jax")


def resolve_cache_dir(value: str | None = None) -> str | None:
    """The cache folder chosen by ``value`` / the environment / the default; None when off."""
    chosen = value if value is not None else os.environ.get(ENV_VAR)
    if chosen is None or chosen == "":
        chosen = default_cache_dir()
    if chosen.lower() in OFF:
        return None
    return os.path.abspath(os.path.expanduser(chosen))


def _unusable(path: str) -> str | None:
    """Why ``path`` cannot be the cache's folder (made if missing), or None when it can. A folder
    that exists but cannot be written is still read (JAX loads what it holds)."""
    try:
        os.makedirs(path, exist_ok=True)
    except FileExistsError:
        return "it exists and is not a folder"
    except OSError as e:
        return f"cannot make the folder ({e.strerror or e})"
    return None


def enable_compilation_cache(value: str | None = None) -> str | None:
    """Point JAX's persistent compilation cache at the chosen folder; returns it (None: off).

    A folder named by ``value`` or ``PUREJAXPPO_COMPILATION_CACHE`` that cannot be made (or is a
    file) is a :class:`~purejaxppo.errors.ConfigError`; when the default folder cannot, a one-line
    warning goes to stderr and the run goes on without the cache (the cache only saves time). A
    read-only folder is used for reading, with a one-line warning.
    """
    import jax

    path = resolve_cache_dir(value)
    if path is None:
        return None
    problem = _unusable(path)
    if problem is not None:
        if value is not None or os.environ.get(ENV_VAR):
            from purejaxppo.errors import ConfigError

            where = f"--compilation-cache {value}" if value is not None else f"{ENV_VAR}={os.environ[ENV_VAR]}"
            raise ConfigError(f"{where}: {problem}; accepted: a folder that exists or can be made, or 'off'")
        sys.stderr.write(f"purejaxppo: warning: no compilation cache: {path}: {problem} (choose a folder with "
                         f"--compilation-cache DIR or {ENV_VAR}, or 'off')\n")
        return None
    if not os.access(path, os.W_OK | os.X_OK):  # still read: programs compiled before are loaded
        sys.stderr.write(f"purejaxppo: warning: the compilation cache {path} is read-only: what is compiled now is "
                         "not saved\n")
    jax.config.update("jax_compilation_cache_dir", path)
    # Cache every program, including the small ones (evaluation, the remainder chunk).
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


def add_cache_flag(parser) -> None:
    """Add ``--compilation-cache`` to an argparse parser."""
    parser.add_argument(
        "--compilation-cache", default=None, metavar="DIR",
        help="folder of JAX's persistent compilation cache, or 'off' (default: $PUREJAXPPO_COMPILATION_CACHE, "
        "else ~/.cache/purejaxppo/jax)",
    )
