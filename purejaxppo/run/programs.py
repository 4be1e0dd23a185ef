"""Traced and lowered programs kept on disk, so that a second launch of the same run skips
tracing and lowering them.

JAX's persistent compilation cache (:mod:`purejaxppo.run.cache`) saves the compilation of a
program, but every launch still traces the Python functions and lowers them to StableHLO
before it can look the program up: about 1.3 s of a launch of CartPole's default run on a CPU
(the initial state and the training chunk), more than training to a solved CartPole takes.
This module saves each program as a serialized :mod:`jax.export` module, under a key that
covers everything the program depends on:

- what the caller says determines the function (the run's config, the program layout chosen
  for the backend, the program's name);
- the source of this package; the versions of the libraries that build the programs (JAX,
  jaxlib, Flax, Optax, chex, gymnax, Brax, MuJoCo, NumPy) and of Python, and the path, size and
  modification time of the Python libraries' source files (an edited install is another key);
- JAX's configuration, the backend, the device kind and count;
- the arguments' tree structure, shapes, dtypes and weak types.

A later launch with the same key deserializes the module and compiles it (a hit in the
compilation cache). The first launch compiles the same module, so every launch runs the same
program. A restore reads the initial state's shapes from its saved program
(:meth:`Programs.shapes`) instead of tracing it. Only functions that the key determines may use
it: the command line's trainers, built from a config by
:func:`purejaxppo.run.compiled.build_trainer`, on one device, its evaluation of their runs, and
its sweeps of them on one device (:func:`purejaxppo.scale.agents.run_agents`). A trainer
built in Python with functions of one's own (a network, an environment not registered with
the package) is not covered by the key, so :func:`purejaxppo.run.runner.run` does not cache
it unless asked.

A program that cannot be exported (a custom call outside JAX's stable set, a host callback),
or whose exported module does not compile, is compiled the usual way and not saved. The
files are ``programs/<key>.jaxprog`` in the compilation cache folder (one per program and
configuration, tens of KB for CartPole); a file that cannot be read is replaced.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import pickle
import re
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import jax

from purejaxppo.versions import installed_version

FOLDER = "programs"
SUFFIX = ".jaxprog"
FORMAT = 1
# The libraries whose code ends up in the traced programs: their versions, and for the Python
# packages among them each source file's path, size and modification time (about 50 ms).
LIBRARIES = ("jax", "jaxlib", "flax", "optax", "chex", "gymnax", "brax", "mujoco", "mujoco-mjx", "numpy")
SOURCE_PACKAGES = ("jax", "flax", "optax", "chex", "gymnax", "brax", "mujoco")
# JAX settings that do not change a traced program.
_IGNORED_CONFIG = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
                   "jax_persistent_cache_min_entry_size_bytes", "jax_enable_compilation_cache")


def _python_files(root: str):
    """The ``.py`` files under ``root``, in a fixed order."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if name.endswith(".py"):
                yield os.path.join(dirpath, name)


@functools.cache
def code_digest() -> str:
    """A hash of this package's source and the versions of the libraries and Python."""
    h = hashlib.sha256()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for path in _python_files(root):
        h.update(os.path.relpath(path, root).encode() + b"\0")
        with open(path, "rb") as f:
            h.update(f.read())
    for lib in LIBRARIES:
        h.update(f"{lib}={installed_version(lib)}\n".encode())
    for package in SOURCE_PACKAGES:  # an edited or editable install keeps its version number
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            continue
        for path in _python_files(os.path.dirname(spec.origin)):
            stat = os.stat(path)
            h.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    h.update(sys.version.encode())
    return h.hexdigest()


# Static data in a tree's nodes can print as "<... object at 0x7f...>" (MJX's model arrays), which
# differs between launches; the config in the key determines that data.
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _leaf(x: Any) -> str:
    aval = jax.typeof(x)
    return f"{aval.dtype}{list(aval.shape)}{'~' if getattr(aval, 'weak_type', False) else ''}"


def program_key(name: str, description: Any, args: Sequence[Any]) -> str:
    """The key of a program: ``description`` (JSON-able) and ``name`` as the caller gives them,
    the code, JAX's configuration and devices, and the arguments' structure and types."""
    leaves, treedef = jax.tree.flatten(tuple(args))
    device = jax.devices()[0]
    config = {k: repr(v) for k, v in sorted(jax.config.values.items()) if k not in _IGNORED_CONFIG}
    parts = {
        "format": FORMAT, "name": name, "description": description, "code": code_digest(),
        "jax_config": config, "backend": jax.default_backend(), "device": device.device_kind,
        "devices": jax.device_count(), "processes": jax.process_count(),
        "tree": _ADDRESS.sub("", str(treedef)), "leaves": [_leaf(x) for x in leaves],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=repr).encode()).hexdigest()[:40]


class Programs:
    """Compiles functions of pytrees, through a folder of saved programs when it has one.

    ``compile(name, fn, args)`` returns a function of the same pytrees as ``fn`` that runs the
    compiled program. ``folder=None`` compiles with :func:`jax.jit` directly.
    """

    def __init__(self, folder: str | None, description: Any = None):
        self.folder = folder
        self.description = description
        self.hits = 0
        self.saved = 0
        self.shapes_read = 0

    def compile(self, name: str, fn: Callable, args: Sequence[Any], donate_argnums: tuple[int, ...] = ()) -> Callable:
        args = tuple(args)
        if self.folder is not None:
            compiled = self._through_export(name, fn, args, donate_argnums)
            if compiled is not None:
                return compiled
        return jax.jit(fn, donate_argnums=donate_argnums).lower(*args).compile()

    def loaded_note(self) -> str:
        """`` (N saved programs loaded)`` for a launch's report, or nothing when none was."""
        return f" ({self.hits} saved program{'s' if self.hits > 1 else ''} loaded)" if self.hits else ""

    def shapes(self, name: str, fn: Callable, args: Sequence[Any]) -> Any:
        """``jax.eval_shape(fn, *args)``, read from the saved program ``name`` when there is one
        (nothing traced): a restore needs the initial state's shapes, and tracing ``init`` costs
        seconds for some environments. Weak types are not kept (a restored state has none)."""
        args = tuple(args)
        if self.folder is not None:
            loaded = _read(os.path.join(self.folder, program_key(name, self.description, args) + SUFFIX))
            if loaded is not None:
                exported, out_tree = loaded
                self.shapes_read += 1
                return jax.tree.unflatten(out_tree, [jax.ShapeDtypeStruct(a.shape, a.dtype)
                                                     for a in exported.out_avals])
        return jax.eval_shape(fn, *args)

    def _through_export(self, name, fn, args, donate_argnums) -> Callable | None:
        from jax import export

        leaves, in_tree = jax.tree.flatten(args)
        path = os.path.join(self.folder, program_key(name, self.description, args) + SUFFIX)
        loaded = _read(path)
        if loaded is not None:
            exported, out_tree = loaded
        else:
            out_trees = []

            def flat(*xs):
                out = fn(*jax.tree.unflatten(in_tree, xs))
                out_leaves, out_tree = jax.tree.flatten(out)
                out_trees.append(out_tree)
                return out_leaves

            try:
                serialized = export.export(jax.jit(flat))(*leaves).serialize()
                # run what a later launch loads (serialization drops the outputs' weak types)
                exported = export.deserialize(serialized)
            except Exception:  # not exportable (custom calls, effects), or no flatbuffers: the usual way
                return None
            out_tree = out_trees[0]
        # the donated arguments' leaves, in the flat argument list
        counts = [len(jax.tree.leaves(a)) for a in args]
        starts = [sum(counts[:i]) for i in range(len(args))]
        donated = tuple(j for i in donate_argnums for j in range(starts[i], starts[i] + counts[i]))
        try:
            call = jax.jit(exported.call, donate_argnums=donated).lower(*leaves).compile()
        except Exception:  # a module this backend will not compile: the usual way, nothing saved
            return None
        if loaded is not None:
            self.hits += 1
        elif _write(path, serialized, out_tree):
            self.saved += 1

        def run(*a):
            return jax.tree.unflatten(out_tree, call(*jax.tree.leaves(a)))

        return run


def _read(path: str):
    """``(exported, out_tree)`` from a program file; None when absent or unreadable."""
    if not os.path.exists(path):
        return None
    try:
        from jax import export

        with open(path, "rb") as f:
            blob = pickle.load(f)
        if blob.get("format") != FORMAT:
            return None
        return export.deserialize(bytearray(blob["exported"])), blob["out_tree"]
    except Exception:  # a truncated or foreign file: traced again and replaced
        return None


def _write(path: str, serialized: bytearray, out_tree) -> bool:
    """Save a program atomically (a reader never sees half a file); False when the folder is not writable."""
    tmp = None
    try:
        data = pickle.dumps({"format": FORMAT, "exported": bytes(serialized), "out_tree": out_tree})
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return True
    except Exception:  # the cache is an optimisation: a run does not fail for it
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
        return False
