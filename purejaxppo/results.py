"""Turning the metrics a run returns into files: CSV, JSON summary, learning curve."""

from __future__ import annotations

import csv
import json
import math
import os
import platform
from importlib import metadata
from typing import Any

import numpy as np

from purejaxppo.config import PPOConfig

CSV_COLUMNS = (
    "env_steps",
    "charts/episodic_return",
    "charts/episodic_length",
    "charts/learning_rate",
    "losses/policy_loss",
    "losses/value_loss",
    "losses/entropy",
    "losses/approx_kl",
    "losses/clipfrac",
    "losses/kl_coef",
    "losses/explained_variance",
    "charts/episodes",
    "losses/epochs",
)

_PACKAGES = ("purejaxppo", "jax", "jaxlib", "flax", "optax", "gymnax", "chex", "orbax-checkpoint", "numpy")


def package_versions() -> dict[str, str]:
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            if name == "purejaxppo":
                import purejaxppo

                out[name] = purejaxppo.__version__
    return out


def final_return(metrics: dict[str, Any], fraction: float = 0.1) -> float:
    """Mean return of the episodes that ended in the last ``fraction`` of env steps.

    Each update reports the mean return of its finished episodes and their count, so the
    mean over several updates weights each update by its episode count. NaN when no
    episode ended in that window.
    """
    returns = np.asarray(metrics["charts/episodic_return"], np.float64)
    counts = np.asarray(metrics["charts/episodes"], np.float64)
    n = returns.shape[-1]
    k = max(1, math.ceil(n * fraction))
    r, c = returns[..., -k:], counts[..., -k:]
    total = np.nansum(np.where(c > 0, r * c, 0.0), axis=-1)
    count = c.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def metrics_rows(config: PPOConfig, metrics: dict[str, Any], start: int = 0) -> list[dict[str, Any]]:
    """CSV rows for per-update ``metrics`` whose first entry is update ``start + 1``."""
    arrays = {k: np.asarray(v) for k, v in metrics.items()}
    n = len(arrays["charts/episodic_return"])
    rows = []
    for i in range(n):
        row: dict[str, Any] = {"env_steps": (start + i + 1) * config.batch_size}
        for col in CSV_COLUMNS[1:]:
            v = arrays[col][i].item()
            row[col] = "" if isinstance(v, float) and math.isnan(v) else v
        rows.append(row)
    return rows


def write_metrics_csv(path: str, rows: list[dict[str, Any]], append: bool = False) -> None:
    new = not append or not os.path.exists(path)
    with open(path, "a" if append else "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def read_metrics_csv(path: str) -> dict[str, np.ndarray]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {
        col: np.array([float(r[col]) if r[col] != "" else np.nan for r in rows]) for col in (rows[0] if rows else {})
    }


def write_json(path: str, data: dict[str, Any]) -> None:
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


def plot_learning_curve(path: str, env_steps: np.ndarray, returns: np.ndarray, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    mask = ~np.isnan(returns)
    ax.plot(env_steps[mask], returns[mask], lw=1.5)
    ax.set_xlabel("env steps")
    ax.set_ylabel("episodic return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def machine_description() -> str:
    import jax

    dev = jax.devices()[0]
    kind = getattr(dev, "device_kind", dev.platform)
    return f"{platform.machine()} {os.cpu_count()} cpu / {jax.default_backend()} ({kind}) x{jax.device_count()}"
