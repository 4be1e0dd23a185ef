"""Checkpoints of a whole training run with Orbax, and their faults.

A checkpoint holds everything needed to continue a run bit for bit: the complete
:class:`~purejaxppo.core.state.RunnerState` (parameters, optimiser state, environment states,
current observations, PRNG key, normaliser statistics, KL coefficient, update counter),
the per-update metrics so far, and a JSON record with the config, the package version
and a checksum of the state.

Layout (``CheckpointManager`` under ``RUN/checkpoints``)::

    RUN/checkpoints/<update>/state      the RunnerState (PRNG keys stored as their key data)
    RUN/checkpoints/<update>/history    {metric name: [updates so far]}
    RUN/checkpoints/<update>/meta       JSON: config, version, update, env steps, checksum, ...
    RUN/checkpoints/damaged/<update>-*  checkpoints found unreadable, moved aside (never deleted)

Orbax writes each checkpoint to a temporary folder and renames it when complete, so a
run killed while saving leaves the previous checkpoints as they were. A save that fails (a
full disk) is reported as one :class:`~purejaxppo.errors.CheckpointError` naming the
checkpoints still intact; the command line keeps Orbax's own error logs and the
closed-event-loop tracebacks of its background threads off the terminal
(:mod:`purejaxppo.run.quiet`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from purejaxppo.errors import CheckpointError

DAMAGED = "damaged"
# what a run whose checkpoints are all damaged can do
FROM_ZERO = "to train the run again from update 0, start it without --resume and with --overwrite"


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _is_empty(x: Any) -> bool:
    return hasattr(x, "shape") and 0 in x.shape


def _stand_in(x: Any) -> np.ndarray:
    """What an array with no elements is stored as (Orbax refuses those)."""
    return np.zeros((1,), np.uint32 if _is_key(x) else x.dtype)


def _key_data_shape(x: Any) -> tuple[int, ...]:
    return jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(x.shape, x.dtype)).shape


def to_savable(state: Any) -> Any:
    """PRNG key arrays become their raw ``uint32`` key data, and arrays with no elements (MJX's
    activations of a model without actuator states) a one-element stand-in: what Orbax can
    store. :func:`from_savable` gives both back from the state they are restored into."""

    def savable(x):
        if _is_empty(x):
            return _stand_in(x)
        return jax.random.key_data(x) if _is_key(x) else x

    return jax.tree_util.tree_map(savable, state)


def from_savable(tree: Any, like: Any) -> Any:
    """Inverse of :func:`to_savable`, given a state (or its ``eval_shape``) of the same structure."""

    def back(x, ref):
        if _is_empty(ref):
            if _is_key(ref):
                return jax.random.wrap_key_data(np.zeros(_key_data_shape(ref), np.uint32))
            return np.zeros(ref.shape, ref.dtype)
        # Runs use the default PRNG implementation (``jax.random.key``).
        return jax.random.wrap_key_data(x) if _is_key(ref) else x

    return jax.tree_util.tree_map(back, tree, like)


def savable_shapes(like: Any) -> Any:
    """The shapes and dtypes :func:`to_savable` gives a state like ``like`` (what Orbax restores)."""
    return _abstract(like)


def _abstract(like: Any) -> Any:
    def shape_of(x):
        if _is_empty(x):
            stand_in = _stand_in(x)
            return jax.ShapeDtypeStruct(stand_in.shape, stand_in.dtype)
        if _is_key(x):
            return jax.ShapeDtypeStruct(_key_data_shape(x), np.uint32)
        return jax.ShapeDtypeStruct(x.shape, x.dtype)

    return jax.tree_util.tree_map(shape_of, like)


def checksum(tree: Any) -> str:
    """SHA-256 over the bytes, dtypes and shapes of every leaf, in tree order."""
    h = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(tree):
        a = np.asarray(leaf)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def save_tree(path: str, tree: Any, this_process_only: bool = False) -> None:
    """Save a pytree of arrays as one Orbax checkpoint in the folder ``path``, replacing one there
    (the RLHF study's stage products, a sweep's agents; a training run's checkpoints are a
    :class:`Checkpointer`'s). ``this_process_only``: written by this process alone, with no barrier
    for the others (a sweep's agents, gathered on process 0 of several)."""
    import orbax.checkpoint as ocp

    path = os.path.abspath(path)  # Orbax refuses a relative path (a relative --out)
    if os.path.exists(path):
        shutil.rmtree(path)
    options = _this_process_only(ocp) if this_process_only else ocp.options.MultiprocessingOptions()
    with ocp.StandardCheckpointer(multiprocessing_options=options) as ckpt:
        ckpt.save(path, tree)


def _this_process_only(ocp):
    """Orbax's options for a checkpoint that this process writes or reads alone: no barrier waits
    for processes that take no part."""
    i = jax.process_index()
    return ocp.options.MultiprocessingOptions(primary_host=i, active_processes={i} if jax.process_count() > 1 else None)


def restore_tree(path: str, like: Any, this_process_only: bool = False) -> Any:
    """The tree :func:`save_tree` saved in ``path``, restored into the structure, shapes and dtypes
    of ``like`` (whose leaves may be arrays or Python numbers)."""
    import orbax.checkpoint as ocp

    def shape_of(x):
        if hasattr(x, "dtype"):
            return jax.ShapeDtypeStruct(x.shape, x.dtype)
        return jax.ShapeDtypeStruct((), jnp.asarray(x).dtype)  # JAX's type of a Python number

    options = _this_process_only(ocp) if this_process_only else ocp.options.MultiprocessingOptions()
    with ocp.StandardCheckpointer(multiprocessing_options=options) as ckpt:
        return ckpt.restore(os.path.abspath(path), jax.tree_util.tree_map(shape_of, like))


def _failure(e: BaseException) -> str:
    """The cause of a failed write, in a few words."""
    text = str(e)
    code = re.search(r"os_error_code='?(\d+)", text)
    if code:
        return os.strerror(int(code.group(1)))
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return _reason(e)  # type: ignore[arg-type]


class Checkpointer:
    """Saves and restores training checkpoints in ``directory`` (keeps the last ``keep``)."""

    def __init__(self, directory: str, keep: int = 3, read_only: bool = False):
        self.directory = os.path.abspath(directory)
        if not read_only:
            os.makedirs(self.directory, exist_ok=True)  # OSError here, before any training
        self.keep = keep
        # A reader (an evaluation) writes nothing: it needs no lock, and works on a read-only disk
        # or beside a run still training (a damaged checkpoint is skipped, not moved aside).
        self.read_only = read_only
        self.failed = False  # a save failed and was reported
        self._manager = None

    @property
    def ocp(self):
        import orbax.checkpoint as ocp

        return ocp

    @property
    def manager(self):
        """Orbax's manager, made at its first use: a run imports Orbax (a third of a second)
        only when it saves or restores, which lets the runner import it while training."""
        if self._manager is None:
            ocp = self.ocp
            self._manager = ocp.CheckpointManager(
                self.directory,
                options=ocp.CheckpointManagerOptions(max_to_keep=None if self.read_only else self.keep,
                                                     save_interval_steps=0 if self.read_only else 1,
                                                     create=not self.read_only,
                                                     cleanup_tmp_directories=not self.read_only,
                                                     read_only=self.read_only),
                item_handlers={
                    "state": ocp.StandardCheckpointHandler(),
                    "history": ocp.StandardCheckpointHandler(),
                    "meta": ocp.JsonCheckpointHandler(),
                },
            )
        return self._manager

    # ------------------------------------------------------------------ save
    def save(self, step: int, state: Any, metrics: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Start saving checkpoint ``step`` (asynchronously); :meth:`close` waits until it is on disk.

        Raises:
            CheckpointError: this save, or the previous one still being written, failed.
        """
        ocp = self.ocp
        # Copies: the next chunk reuses (donates) the device buffers while Orbax writes in the background.
        tree = jax.tree_util.tree_map(lambda x: np.array(x, copy=True), jax.device_get(to_savable(state)))
        record = dict(meta, update=int(step), checksum=checksum(tree), saved_at=time.time())
        metrics = {k: np.asarray(v) for k, v in metrics.items()}
        try:
            # the call also waits for the previous save, which may have failed
            self.manager.save(
                int(step),
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(tree),
                    history=ocp.args.StandardSave(metrics),
                    meta=ocp.args.JsonSave(record),
                ),
                force=True,
            )
        except Exception as e:  # noqa: BLE001 - any failure to write is reported the same way
            raise self._save_failed(e) from None

    def _save_failed(self, e: BaseException) -> CheckpointError:
        self.failed = True
        names = os.listdir(self.directory) if os.path.isdir(self.directory) else []
        intact = sorted(int(n) for n in names if n.isdigit())
        kept = (f"the checkpoints on disk are intact (updates {', '.join(map(str, intact))}); free space and continue "
                "with --resume") if intact else "no checkpoint was saved before"
        return CheckpointError(f"saving a checkpoint in {self.directory} failed: {_failure(e)}; {kept}")

    def close(self) -> None:
        """Wait for the last save to reach the disk, and release Orbax's threads.

        Raises:
            CheckpointError: the last save failed (unless a failure was already reported).
        """
        if self._manager is None:  # never used
            return
        error = None
        try:
            self.manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001
            if not self.failed:
                error = self._save_failed(e)
        with contextlib.suppress(Exception):
            self.manager.close()
        if error is not None:
            raise error

    # ------------------------------------------------------------------ restore
    def steps(self) -> list[int]:
        self.manager.reload()
        return sorted(int(s) for s in self.manager.all_steps())

    def damaged(self) -> list[str]:
        """The checkpoints moved aside as damaged (``damaged/<update>-<time>``), by update."""
        folder = os.path.join(self.directory, DAMAGED)
        names = os.listdir(folder) if os.path.isdir(folder) else []
        update = lambda name: int(name.split("-")[0]) if name.split("-")[0].isdigit() else -1  # noqa: E731
        return sorted(names, key=lambda name: (update(name), name))

    def _restore_step(self, step: int, like: Any) -> tuple[Any, dict[str, np.ndarray], dict[str, Any]]:
        ocp = self.ocp
        differs = self._structure_difference(step, like)
        if differs is not None:  # written for another config or version: not damage, left as it is
            raise CheckpointError(f"the checkpoint at update {step} in {self.directory} holds a state of another "
                                  f"structure than this run's ({differs}): it was made with another config or "
                                  "version; it is left as it is; accepted: the run's own config")
        out = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(_abstract(like)),
                history=ocp.args.StandardRestore(),
                meta=ocp.args.JsonRestore(),
            ),
        )
        tree, metrics, meta = out["state"], out["history"], out["meta"]
        if meta.get("update") != step:
            raise ValueError(f"its record says update {meta.get('update')}")
        if checksum(tree) != meta.get("checksum"):
            raise ValueError("its state does not match the checksum saved with it")
        metrics = {k: np.asarray(v) for k, v in metrics.items()}
        if any(len(v) != step for v in metrics.values()):
            raise ValueError("its metric history does not cover its updates")
        return from_savable(tree, like), metrics, meta

    def restore(self, like: Any, step: int | None = None, log: Callable[[str], None] = print):
        """Restore ``step`` (default: the latest usable one) as ``(step, state, metrics, meta)``.

        ``like`` is a state (or its ``jax.eval_shape``) with the expected structure. When the
        latest checkpoint cannot be read it is reported, moved to ``damaged/`` and the previous
        one is tried. An explicitly requested ``step`` that cannot be read is an error.
        """
        steps = self.steps()
        if step is not None:
            if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
                raise CheckpointError(f"step: got {step!r}; accepted: an update number (an integer), or None for the "
                                      "latest")
            if step not in steps:
                raise CheckpointError(
                    f"no checkpoint at update {step} in {self.directory}; available: "
                    f"{', '.join(map(str, steps)) or 'none'}"
                )
            try:
                return (step, *self._restore_step(step, like))
            except CheckpointError:
                raise
            except Exception as e:  # noqa: BLE001 - any read failure means the checkpoint is unusable
                raise CheckpointError(f"checkpoint at update {step} in {self.directory} is damaged: {_reason(e)}") from None
        if not steps:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        for s in reversed(steps):
            try:
                return (s, *self._restore_step(s, like))
            except CheckpointError:  # not damage: nothing is moved
                raise
            except Exception as e:  # noqa: BLE001
                if self.read_only:
                    log(f"warning: checkpoint at update {s} cannot be read ({_reason(e)}); trying the previous one")
                    continue
                moved = self._move_aside(s)
                log(f"warning: checkpoint at update {s} is damaged ({_reason(e)}); moved to {moved}")
        raise CheckpointError(f"every checkpoint in {self.directory} is damaged; they were moved to {DAMAGED}/; "
                              f"{FROM_ZERO}")

    def _structure_difference(self, step: int, like: Any) -> str | None:
        """How the state stored at ``step`` differs in its arrays' count, shapes or dtypes from
        ``like`` (None: the same, or the stored description cannot be read: damage)."""
        try:
            stored = jax.tree_util.tree_leaves(self.manager.item_metadata(step)["state"])
            saved = sorted((tuple(a.shape), str(np.dtype(a.dtype))) for a in stored)
        except Exception:  # noqa: BLE001
            return None
        wanted = sorted((tuple(a.shape), str(np.dtype(a.dtype))) for a in jax.tree_util.tree_leaves(_abstract(like)))
        if len(saved) != len(wanted):
            return f"{len(saved)} arrays, this run's state has {len(wanted)}"
        for (s_shape, s_dtype), (w_shape, w_dtype) in zip(saved, wanted):
            if (s_shape, s_dtype) != (w_shape, w_dtype):
                return f"an array of shape {s_shape} {s_dtype} where this run's has {w_shape} {w_dtype}"
        return None

    def meta(self, step: int) -> dict[str, Any] | None:
        """The JSON record saved with checkpoint ``step`` (its config, version, ...), read without
        touching the checkpoint; None when it cannot be read (the restore then finds the damage)."""
        import json

        path = os.path.join(self.directory, str(step), "meta", "metadata")
        try:
            with open(path) as f:
                record = json.load(f)
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def _move_aside(self, step: int) -> str:
        src = os.path.join(self.directory, str(step))
        dst_dir = os.path.join(self.directory, DAMAGED)
        os.makedirs(dst_dir, exist_ok=True)
        dst = os.path.join(dst_dir, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.move(src, dst)
        self.manager.reload()
        return dst


def _reason(e: Exception) -> str:
    text = str(e).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(e).__name__}: {first[:200]}" if first else type(e).__name__
