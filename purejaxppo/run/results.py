"""Turning what runs and sweeps return into files: metric rows, learning curves, sweep tables.

File names come from :mod:`purejaxppo.run.layout`; the metric columns from the schema in
:mod:`purejaxppo.core.metrics`.
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from typing import Any

import numpy as np

from purejaxppo.core.config import PPOConfig
from purejaxppo.core.metrics import METRIC_NAMES, SCHEMAS
from purejaxppo.errors import RunError
from purejaxppo.naming import is_brax
from purejaxppo.run import layout
from purejaxppo.versions import installed_versions

CSV_COLUMNS = ("env_steps", *METRIC_NAMES)


def csv_columns(config: PPOConfig) -> tuple[str, ...]:
    """``metrics.csv``'s columns for ``config``'s algorithm: env_steps, then its metric schema."""
    return ("env_steps", *SCHEMAS[config.algo])

_PACKAGES = ("purejaxppo", "jax", "jaxlib", "flax", "optax", "gymnax", "orbax-checkpoint", "numpy")


_BRAX_PACKAGES = ("brax", "mujoco", "mujoco-mjx")


def package_versions(env: str | None = None) -> dict[str, str]:
    """Installed versions of the packages a result depends on (Brax's too for a ``brax/`` environment)."""
    return installed_versions(_PACKAGES + (_BRAX_PACKAGES if env and is_brax(env) else ()))


def metrics_rows(config: PPOConfig, metrics: dict[str, Any], start: int = 0) -> list[dict[str, Any]]:
    """CSV rows for per-update ``metrics`` whose first entry is update ``start + 1``."""
    arrays = {k: np.asarray(v) for k, v in metrics.items()}
    n = len(arrays["charts/episodic_return"])
    rows = []
    for i in range(n):
        row: dict[str, Any] = {"env_steps": (start + i + 1) * config.batch_size}
        for col in csv_columns(config)[1:]:
            v = arrays[col][i].item()
            row[col] = "" if isinstance(v, float) and math.isnan(v) else v
        rows.append(row)
    return rows


def plot_learning_curve(path: str, env_steps: np.ndarray, returns: np.ndarray, title: str,
                        diverged_at: int | None = None) -> None:
    """Mean return of the episodes ended in each update (updates that ended none are skipped);
    markers where there are few points, and a red line where a run diverged."""
    fig, ax = _figure((6, 4))
    mask = np.isfinite(returns)
    if diverged_at is not None:
        mask &= env_steps < diverged_at
    ax.plot(env_steps[mask], returns[mask], lw=1.5, marker="o" if mask.sum() < 20 else None, ms=3)
    if diverged_at is not None:
        ax.axvline(diverged_at, color="tab:red", ls="--", lw=1)
        ax.text(diverged_at, 0.98, " diverged", color="tab:red", va="top", transform=ax.get_xaxis_transform())
    ax.set_xlabel("env steps")
    ax.set_ylabel("episodic return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except OSError as e:
        raise RunError(f"cannot write {path}: {e.strerror or e}") from None


# What _figure imports (the runner imports them early, in the background).
PLOT_MODULES = ("matplotlib.backends.backend_agg", "matplotlib.figure")


def _figure(size: tuple[float, float]):
    """A figure and its axes drawn by Agg, without pyplot (no global state; its import costs a second)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def write_sweep(out_dir: str, config: PPOConfig, result: Any, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Write results.csv, summary.csv, curves.png, config.json and metrics.npz; return the summary rows."""
    from purejaxppo.scale.stats import summarize

    os.makedirs(out_dir, exist_ok=True)
    layout.write_config(out_dir, config, sweep=spec)
    fields = sorted({f for s in result.settings for f in s})
    with open(os.path.join(out_dir, layout.SWEEP_RESULTS), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["agent", "setting", *fields, "seed", "final_return", "auc", "diverged"])
        diverged = getattr(result, "diverged", None)
        for g, setting in enumerate(result.settings):
            for s in range(result.seeds):
                w.writerow([g * result.seeds + s, g, *[setting.get(k, "") for k in fields], s,
                            _fmt(result.final_return[g, s]), _fmt(result.auc[g, s]),
                            bool(diverged[g, s]) if diverged is not None else False])
    rows = summarize(result)
    cols = ["rank", "setting", *fields, "mean_final_return", "std_final_return", "ci95_low", "ci95_high", "mean_auc", "seeds",
            "diverged"]
    with open(os.path.join(out_dir, layout.SWEEP_SUMMARY), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for rank, r in enumerate(rows, 1):
            w.writerow([rank, *[_fmt(r.get(c, "")) for c in cols[1:]]])
    env_steps = np.arange(1, config.num_updates + 1) * config.batch_size
    np.savez_compressed(
        os.path.join(out_dir, layout.SWEEP_METRICS),
        env_steps=env_steps,
        **{k.replace("/", "__"): v for k, v in result.metrics.items()},
    )
    _plot_curves(os.path.join(out_dir, layout.SWEEP_CURVES), env_steps, result, config.env)
    return rows


def _fmt(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        return "" if np.isnan(v) else float(v)
    return v




def curve_band(returns: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mean, low, high)`` over seeds of returns ``[S, U]``: the band is the range of what the
    seeds returned (minimum to maximum at each update, NaN-aware), so it never leaves the values
    an environment can give (a mean +- a multiple of the spread can, e.g. above CartPole's 500)."""
    assert returns.ndim == 2, returns.shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an update where no seed ended an episode
        return np.nanmean(returns, axis=0), np.nanmin(returns, axis=0), np.nanmax(returns, axis=0)


def _plot_curves(path: str, env_steps: np.ndarray, result: Any, env: str) -> None:
    returns = result.metrics["charts/episodic_return"]  # [G, S, U]
    fig, ax = _figure((7, 4.5))
    for g, setting in enumerate(result.settings):
        mean, low, high = curve_band(returns[g])
        label = ", ".join(f"{k}={v:.3g}" for k, v in setting.items()) or "default"
        line = ax.plot(env_steps, mean, lw=1.4, label=label)[0]
        if result.seeds > 1:
            ax.fill_between(env_steps, low, high, color=line.get_color(), alpha=0.2, lw=0)
    ax.set_xlabel("env steps")
    ax.set_ylabel("episodic return")
    bands = "; bands: min-max over seeds" if result.seeds > 1 else ""
    ax.set_title(f"{env}: mean over {result.seeds} seed(s){bands}", fontsize=9)
    if len(result.settings) <= 12:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
