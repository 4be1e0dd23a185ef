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

While a run, a sweep or an RLHF study writes to a folder it holds an exclusive lock on
``FOLDER/.purejaxppo.lock`` (``flock``: released by the system when the process ends, however
it ends), and a second writer is refused. An evaluation only reads (its eval.json is written
atomically, where it can be): it takes no lock.
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
SWEEP_AGENTS = "agents"  # one Orbax checkpoint of every agent's final state and hyperparameters
SWEEP_EVALS = "evals"  # evals/agentI.json: purejaxppo eval --run SWEEP --agent I

STUDY_SETTINGS = "settings.json"

# What each kind of run may leave in its folder: what --overwrite removes from a folder that holds
# a run of its own kind, and only that (a folder holding another kind of run is refused).
TRAIN_FILES = (CONFIG, RUN_SETTINGS, METRICS, SUMMARY, CURVE, CHECKPOINTS, TENSORBOARD, WANDB, EVAL)
SWEEP_FILES = (CONFIG, SWEEP_RESULTS, SWEEP_SUMMARY, SWEEP_METRICS, SWEEP_CURVES, SWEEP_AGENTS, CHECKPOINTS, SWEEP_EVALS,
               "lineage.csv", "pbt.npz", "hparams.png")  # the last three: a PBT sweep's (run/population.py)
STUDY_FILES = (STUDY_SETTINGS, "stages", CHECKPOINTS, "results.csv", "summary.md", "frontier.png", "ppo_curves.png",
               "overoptimisation.png")
KIND_FILES = {"train": TRAIN_FILES, "sweep": SWEEP_FILES, "rlhf": STUDY_FILES}
KIND_NAMES = {"train": "a training run (purejaxppo train)", "sweep": "a sweep (purejaxppo sweep)",
              "rlhf": "an RLHF study (purejaxppo rlhf)"}
RUN_FILES = tuple(dict.fromkeys(TRAIN_FILES + SWEEP_FILES + STUDY_FILES))


def write_json(path: str, data: dict[str, Any]) -> None:
    """Write ``data`` as indented, valid JSON (a non-finite number becomes ``null``), atomically
    (a temporary file renamed into place: a reader sees the old file or the new one)."""
    tmp = f"{path}.{os.getpid()}.tmp"  # one per writer: two evaluations may write eval.json at once
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
    config, data = _read_config(run_dir, "the --out folder of a purejaxppo train run")
    if "sweep" in data:
        count = data["sweep"].get("num_agents") if isinstance(data["sweep"], dict) else None
        if isinstance(count, int) and os.path.isdir(os.path.join(run_dir, SWEEP_AGENTS)):
            raise CheckpointError(f"{run_dir} holds a sweep of {count} agents, not a training run; accepted: a "
                                  "training run's folder, or one of the sweep's agents (eval --agent I, train "
                                  f"--init-from SWEEP --agent I, load_policy(SWEEP, agent=I); I from 0 to {count - 1})")
        raise CheckpointError(f"{run_dir} holds a sweep (purejaxppo sweep), not a training run; accepted: a "
                              "training run's folder (purejaxppo train --out; a sweep's results are in its results.csv)")
    return config


def read_sweep(run_dir: str) -> tuple[PPOConfig, dict[str, Any]]:
    """``(config, spec)`` of a sweep's folder: its base configuration and how its plan was asked for
    (a training run's folder is refused)."""
    config, data = _read_config(run_dir, "the --out folder of a purejaxppo sweep")
    if not isinstance(data.get("sweep"), dict):
        raise CheckpointError(f"{run_dir} holds a training run, not a sweep; accepted: the --out folder of a "
                              "purejaxppo sweep (--agent applies to a sweep's agents)")
    return config, data["sweep"]


def _read_config(run_dir: str, accepted: str) -> tuple[PPOConfig, dict[str, Any]]:
    path = os.path.join(run_dir, CONFIG)
    if not os.path.isdir(run_dir):
        what = f"{run_dir} is a file, not a run folder" if os.path.exists(run_dir) else f"no run folder at {run_dir}"
        raise CheckpointError(f"{what}; accepted: {accepted}")
    if not os.path.exists(path):
        raise CheckpointError(f"{run_dir} is not a run folder (it has no {CONFIG})")
    data = read_json(path, "the run's config")
    fields = {k: v for k, v in data.items() if k != "sweep"}
    try:
        config = PPOConfig.from_dict(fields)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"the run's config {path} is damaged: {e}") from None
    try:
        return validate(config), data
    except ValueError as e:  # a value edited by hand, or from a version that accepted it
        raise CheckpointError(f"the run's config {path} holds a value that is not accepted: {e}") from None


def write_run_settings(run_dir: str, settings: dict[str, Any]) -> None:
    write_json(os.path.join(run_dir, RUN_SETTINGS), settings)


def read_run_settings(run_dir: str) -> dict[str, Any]:
    """How the run in ``run_dir`` is managed (empty for a run written before run.json existed)."""
    from purejaxppo.errors import ConfigError
    from purejaxppo.run.options import check_option

    path = os.path.join(run_dir, RUN_SETTINGS)
    if not os.path.exists(path):
        return {}
    settings = read_json(path, "the run's settings")
    try:  # checked as the flags are: a value edited by hand is refused before anything runs
        for name, value in settings.items():
            if name == "preset":
                if value is not None and not isinstance(value, str):
                    raise ConfigError(f"preset: got {value!r}; accepted: a preset's name, or null")
            else:
                check_option(name, value)
    except ConfigError as e:
        raise CheckpointError(f"the run's settings {path} hold a value that is not accepted: {e}") from None
    return settings


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
            raise RunError(f"{out} is in use by another run, sweep or RLHF study (the lock was last taken by "
                           f"process {holder}); accepted: wait until it ends, or use another folder") from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
        except OSError as e:  # a full disk: the lock is held all the same, its holder's number is not written
            raise RunError(f"--out: cannot write in {out}: {e.strerror or e}; accepted: a folder with space you "
                           "can write to") from None
        yield
    finally:
        os.close(fd)  # closing the file releases the lock


def folder_kind(out: str) -> str | None:
    """The kind of run whose files ``out`` holds ("train", "sweep" or "rlhf"), told by the file
    each writes first (a sweep's config.json names its spec); None when it holds none."""
    if os.path.exists(os.path.join(out, STUDY_SETTINGS)):
        return "rlhf"
    path = os.path.join(out, CONFIG)
    if os.path.exists(path):
        try:
            with open(path) as f:
                return "sweep" if "sweep" in json.load(f) else "train"
        except (OSError, ValueError, TypeError):  # damaged: the reading command says so
            return "train"
    return "train" if os.path.exists(os.path.join(out, RUN_SETTINGS)) else None


def _present(out: str, names) -> list[str]:
    """Those of ``names`` in ``out``, an empty folder not counted (one a stopped run had just made)."""
    found = []
    for name in names:
        path = os.path.join(out, name)
        if os.path.isdir(path) and not os.listdir(path):
            continue
        if os.path.lexists(path):
            found.append(name)
    return found


def check_out_dir(out: str, overwrite: bool, kind: str = "train") -> None:
    """A new or empty folder, or one holding a run of ``kind`` that ``overwrite`` allows to replace.
    A folder holding another kind of run, or files of these names that no run wrote, is refused."""
    _check_named(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise RunError(f"--out: {out} exists and is not a folder; accepted: a folder that holds no run, or a new one")
    found = folder_kind(out) if os.path.isdir(out) else None
    if found is not None and found != kind:
        raise RunError(f"--out: {out} holds {KIND_NAMES[found]}, not {KIND_NAMES[kind]}; accepted: a new or empty "
                       "folder, or one of the same kind")
    existing = _present(out, RUN_FILES if found is None else KIND_FILES[kind])
    if existing and found is None:
        raise RunError(f"--out: {out} holds files that no purejaxppo run wrote ({', '.join(existing)}); they are "
                       "kept; accepted: a new or empty folder, or another --out")
    if existing and not overwrite:
        raise RunError(
            f"--out: {out} already holds a run ({', '.join(existing)}); pass --overwrite to replace it "
            "or choose another folder"
        )


def clear_run(out: str, kind: str = "train") -> None:
    """Remove a previous run's outputs (and only those of a run of ``kind``) from ``out``."""
    if folder_kind(out) == kind:
        remove_named(out, KIND_FILES[kind])


def remove_named(out: str, names) -> None:
    """Remove the files and folders ``names`` from ``out`` (those present; nothing else)."""
    for name in names:
        path = os.path.join(out, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
