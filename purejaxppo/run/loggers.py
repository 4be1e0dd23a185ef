"""Where metrics go while a run trains: the CSV file, a progress bar, TensorBoard, W&B.

Every logger receives the same rows as ``metrics.csv`` (one per update, keyed by the CSV
column names) as each chunk of updates finishes. TensorBoard (``tensorboardX``) and Weights &
Biases (``wandb``) are optional extras, imported only when asked for::

    pip install "purejaxppo[tensorboard]"   # --tensorboard
    pip install "purejaxppo[wandb]"         # --wandb (offline by default: no account needed)
"""

from __future__ import annotations

import csv
import math
import os
import sys
import time
from typing import Any, TextIO

from purejaxppo.errors import MissingExtra, RunError
from purejaxppo.run.results import CSV_COLUMNS


class CSVLogger:
    """Streams rows to ``metrics.csv``, flushed after every chunk."""

    def __init__(self, path: str, previous_rows: list[dict[str, Any]] | None = None,
                 columns: tuple[str, ...] = CSV_COLUMNS):
        self.path = path
        tmp = path + ".tmp"
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(previous_rows or [])
        os.replace(tmp, path)
        self._file = open(path, "a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=columns)

    def log(self, rows: list[dict[str, Any]]) -> None:
        try:
            self._writer.writerows(rows)
            self._file.flush()
        except OSError as e:
            raise RunError(f"cannot write {self.path}: {e.strerror or e}; the checkpoints already saved are intact; "
                           "free space and continue with --resume") from None

    def close(self) -> None:
        try:
            self._file.close()
        except OSError:  # the failed write was reported by log()
            pass


def _scalars(row: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in row.items() if k != "env_steps" and v != "" and not math.isnan(float(v))}


TENSORBOARD_MISSING = ("--tensorboard needs the tensorboardX package; install it with: pip install "
                       "\"purejaxppo[tensorboard]\"")
WANDB_MISSING = "--wandb needs the wandb package; install it with: pip install \"purejaxppo[wandb]\""


def check_extras(tensorboard: bool, wandb: bool) -> None:
    """The extras the asked-for loggers need are installed (checked before anything compiles or
    is written; found, not imported: importing wandb takes seconds)."""
    import importlib.util

    if tensorboard and importlib.util.find_spec("tensorboardX") is None:
        raise MissingExtra(TENSORBOARD_MISSING)
    if wandb and importlib.util.find_spec("wandb") is None:
        raise MissingExtra(WANDB_MISSING)


class TensorBoardLogger:
    """TensorBoard event files in ``logdir``; x axis: env steps."""

    def __init__(self, logdir: str):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise MissingExtra(TENSORBOARD_MISSING) from None
        self.writer = SummaryWriter(logdir=logdir)

    def log(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            step = int(row["env_steps"])
            for name, value in _scalars(row).items():
                self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """A Weights & Biases run (``mode='offline'`` writes under ``directory`` and needs no account)."""

    def __init__(self, directory: str, project: str, mode: str, config: dict[str, Any], name: str | None = None):
        try:
            import wandb
        except ImportError:
            raise MissingExtra(WANDB_MISSING) from None
        os.makedirs(directory, exist_ok=True)
        self.wandb = wandb
        self.run = wandb.init(
            project=project, mode=mode, dir=directory, config=config, name=name, reinit="create_new",
            settings=wandb.Settings(silent=True, console="off"),
        )

    def log(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self.run.log(_scalars(row), step=int(row["env_steps"]))

    def close(self) -> None:
        self.run.finish()


class ProgressBar:
    """One self-rewriting status line on a terminal; silent when ``stream`` is not a terminal."""

    def __init__(self, total_steps: int, start_steps: int = 0, stream: TextIO | None = None, enabled: bool | None = None):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total = total_steps
        self.start_steps = start_steps
        self.t0 = time.perf_counter()
        self.last_return = math.nan
        self._width = 0

    def log(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            v = row.get("charts/episodic_return", "")
            if v != "":
                self.last_return = float(v)
        if rows:
            self.update(int(rows[-1]["env_steps"]))

    def update(self, steps: int) -> None:
        if not self.enabled:
            return
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        sps = (steps - self.start_steps) / elapsed
        frac = min(steps / max(self.total, 1), 1.0)
        eta = (self.total - steps) / sps if sps > 0 else math.inf
        bar = "#" * int(frac * 24)
        ret = "-" if math.isnan(self.last_return) else f"{self.last_return:.1f}"
        line = (
            f"[{bar:<24}] {steps:,}/{self.total:,} steps  {sps:,.0f} steps/s  return {ret}  "
            f"ETA {_duration(eta)}"
        )
        pad = " " * max(self._width - len(line), 0)
        self._width = len(line)
        self.stream.write("\r" + line + pad)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\n")
            self.stream.flush()


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
