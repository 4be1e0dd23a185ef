"""The run folder: the name of every file a run or a sweep writes, and reading and writing its config.

A training run (``purejaxppo train --out RUN``)::

    RUN/config.json          the full resolved PPOConfig
    RUN/metrics.csv          one row per update: env_steps, then the metric schema's columns
    RUN/summary.json         final return, timings, versions, ...
    RUN/learning_curve.png
    RUN/checkpoints/         Orbax checkpoints (purejaxppo.run.checkpoints)
    RUN/tensorboard/, RUN/wandb/   optional loggers
    RUN/eval.json            written by ``purejaxppo eval``

A sweep (``purejaxppo sweep --out DIR``): config.json (with the sweep's spec), results.csv,
summary.csv, metrics.npz and curves.png.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import numpy as np

from purejaxppo.core.config import PPOConfig
from purejaxppo.errors import CheckpointError, RunError

CONFIG = "config.json"
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
RUN_FILES = (CONFIG, METRICS, SUMMARY, CURVE, CHECKPOINTS, TENSORBOARD, WANDB, EVAL,
             SWEEP_RESULTS, SWEEP_SUMMARY, SWEEP_METRICS, SWEEP_CURVES)


def write_json(path: str, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON, atomically (a temporary file renamed into place)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=False, default=_json_default)
        f.write("\n")
    os.replace(tmp, path)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))


def write_config(run_dir: str, config: PPOConfig, **extra: Any) -> None:
    write_json(os.path.join(run_dir, CONFIG), {**config.to_dict(), **extra})


def read_config(run_dir: str) -> PPOConfig:
    """The configuration a run was trained with."""
    path = os.path.join(run_dir, CONFIG)
    if not os.path.isdir(run_dir):
        raise CheckpointError(f"no run folder at {run_dir}")
    if not os.path.exists(path):
        raise CheckpointError(f"{run_dir} is not a run folder (it has no {CONFIG})")
    with open(path) as f:
        return PPOConfig.from_dict(json.load(f))


def check_out_dir(out: str, overwrite: bool) -> None:
    """A new or empty folder, or one whose run ``overwrite`` allows to replace."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise RunError(f"--out: {out} exists and is not a folder; accepted: a new or empty folder")
    existing = [f for f in RUN_FILES if os.path.exists(os.path.join(out, f))]
    if existing and not overwrite:
        raise RunError(
            f"--out: {out} already holds a run ({', '.join(existing)}); pass --overwrite to replace it "
            "or choose another folder"
        )


def clear_run(out: str) -> None:
    """Remove a previous run's outputs (and only those) from ``out``."""
    for name in RUN_FILES:
        path = os.path.join(out, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
