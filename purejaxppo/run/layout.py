"""The run folder: the name of every file a run or a sweep writes, and reading and writing its config.

A training run (``purejaxppo train --out RUN``)::

    RUN/config.json          the full resolved PPOConfig
    RUN/run.json             how the run is managed (preset, chunk size, checkpoints, loggers), reused by --resume
    RUN/metrics.csv          one row per update: env_steps, then the metric schema's columns
    RUN/summary.json         final return, timings, versions, ...
    RUN/learning_curve.png
    RUN/checkpoints/         Orbax checkpoints (purejaxppo.run.checkpoints)
    RUN/tensorboard/, RUN/wandb/   optional loggers
    RUN/eval.json            written by ``purejaxppo eval``

A sweep (``purejaxppo sweep --out DIR``): config.json (with the sweep's spec), results.csv,
summary.csv, metrics.npz and curves.png.

While a run, a sweep or an evaluation writes to a folder it holds an exclusive lock on
``FOLDER/.purejaxppo.lock`` (``flock``: released by the system when the process ends, however
it ends), and a second writer is refused.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from collections.abc import Iterator
from typing import Any

import numpy as np

from purejaxppo.core.config import PPOConfig, validate
from purejaxppo.errors import CheckpointError, RunError

CONFIG = "config.json"
RUN_SETTINGS = "run.json"
LOCK = ".purejaxppo.lock"
METRICS = "metrics.csv"
SUMMARY = "summary.json"
CURVE = "learning_curve.png"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
WANDB = "wandb"
EVAL = "eval.json"
SWEEP_RESULTS = "results.csv"
SWEEP_SUMMARY = "summary.csv"
SWEEP_METRICS = "metrics.npz"
SWEEP_CURVES = "curves.png"

# Everything a run or a sweep may leave in its folder (what --overwrite removes, and only that).
RUN_FILES = (CONFIG, RUN_SETTINGS, METRICS, SUMMARY, CURVE, CHECKPOINTS, TENSORBOARD, WANDB, EVAL,
             SWEEP_RESULTS, SWEEP_SUMMARY, SWEEP_METRICS, SWEEP_CURVES)


def write_json(path: str, data: dict[str, Any]) -> None:
    """Write ``data`` as indented, valid JSON (a non-finite number becomes ``null``), atomically
    (a temporary file renamed into place: a reader sees the old file or the new one)."""
    tmp = path + ".tmp"
    text = json.dumps(_plain(data), indent=2, sort_keys=False, allow_nan=False)
    try:
        with open(tmp, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise RunError(f"cannot write {path}: {e.strerror or e}; accepted: a folder with space you can write to") from None


def _plain(o: Any) -> Any:
    """JSON-ready copy: numpy scalars and arrays as Python values, NaN and infinities as None."""
    if isinstance(o, dict):
        return {k: _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_plain(v) for v in o]
    if isinstance(o, np.ndarray):
        return _plain(o.tolist())
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


def read_json(path: str, what: str) -> dict[str, Any]:
    """A JSON object written by :func:`write_json`; a damaged file is a one-line :class:`CheckpointError`."""
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{what} {path} is damaged (not valid JSON: {e.msg} at line {e.lineno}); "
                              "accepted: the file as the run wrote it") from None
    except OSError as e:
        raise CheckpointError(f"cannot read {what} {path}: {e.strerror or e}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{what} {path} is damaged (not a JSON object); accepted: the file as the run wrote it")
    return data


def write_config(run_dir: str, config: PPOConfig, **extra: Any) -> None:
    write_json(os.path.join(run_dir, CONFIG), {**config.to_dict(), **extra})


def read_config(run_dir: str) -> PPOConfig:
    """The configuration a training run was trained with (a sweep's folder is refused)."""
    path = os.path.join(run_dir, CONFIG)
    if not os.path.isdir(run_dir):
        what = f"{run_dir} is a file, not a run folder" if os.path.exists(run_dir) else f"no run folder at {run_dir}"
        raise CheckpointError(f"{what}; accepted: the --out folder of a purejaxppo train run")
    if not os.path.exists(path):
        raise CheckpointError(f"{run_dir} is not a run folder (it has no {CONFIG})")
    data = read_json(path, "the run's config")
    if "sweep" in data:
        raise CheckpointError(f"{run_dir} holds a sweep (purejaxppo sweep), not a training run; accepted: the "
                              "folder of purejaxppo train --out (a sweep's results are in its results.csv)")
    try:
        config = PPOConfig.from_dict(data)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"the run's config {path} is damaged: {e}") from None
    try:
        return validate(config)
    except ValueError as e:  # a value edited by hand, or from a version that accepted it
        raise CheckpointError(f"the run's config {path} holds a value that is not accepted: {e}") from None


def write_run_settings(run_dir: str, settings: dict[str, Any]) -> None:
    write_json(os.path.join(run_dir, RUN_SETTINGS), settings)


def read_run_settings(run_dir: str) -> dict[str, Any]:
    """How the run in ``run_dir`` is managed (empty for a run written before run.json existed)."""
    path = os.path.join(run_dir, RUN_SETTINGS)
    return read_json(path, "the run's settings") if os.path.exists(path) else {}


def _check_named(out: str) -> None:
    if not out or not out.strip():
        raise RunError("--out: the folder name is empty; accepted: a folder path such as runs/my_run")


def check_out_path(out: str) -> None:
    """``out`` names a folder that exists or can be made."""
    _check_named(out)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise RunError(f"--out: cannot make the folder {out}: {e.strerror or e}; accepted: a folder you can "
                       "write to") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise RunError(f"--out: {out} is not writable; accepted: a folder you can write to")


@contextlib.contextmanager
def locked(out: str) -> Iterator[None]:
    """Hold the folder's lock while the block writes to it; a folder locked by another process
    (or another run in this one) is refused with a :class:`RunError`."""
    check_out_path(out)
    path = os.path.join(out, LOCK)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise RunError(f"--out: cannot write in {out}: {e.strerror or e}; accepted: a folder you can write to") from None
    try:
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # no flock on this system: no lock
            pass
        except OSError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            raise RunError(f"{out} is in use by another run, sweep or evaluation (the lock was last taken by "
                           f"process {holder}); accepted: wait until it ends, or use another folder") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)  # closing the file releases the lock


def check_out_dir(out: str, overwrite: bool) -> None:
    """A new or empty folder, or one whose run ``overwrite`` allows to replace."""
    _check_named(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise RunError(f"--out: {out} exists and is not a folder; accepted: a folder that holds no run, or a new one")
    existing = [f for f in RUN_FILES if os.path.exists(os.path.join(out, f))]
    if existing and not overwrite:
        raise RunError(
            f"--out: {out} already holds a run ({', '.join(existing)}); pass --overwrite to replace it "
            "or choose another folder"
        )


def clear_run(out: str) -> None:
    """Remove a previous run's outputs (and only those) from ``out``."""
    remove_named(out, RUN_FILES)


def remove_named(out: str, names) -> None:
    """Remove the files and folders ``names`` from ``out`` (those present; nothing else)."""
    for name in names:
        path = os.path.join(out, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
