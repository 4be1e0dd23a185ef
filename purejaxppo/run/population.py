"""A PBT sweep's own result files: the lineage, the population's hyperparameters over time, a plot."""

from __future__ import annotations

import csv
import os
from typing import Any

import numpy as np

PBT_LINEAGE = "lineage.csv"  # one row per generation and agent: parent, fitness, diverged, explored values
PBT_ARRAYS = "pbt.npz"  # the same as arrays: updates [G], parent/fitness/diverged [G, A], hparams__F [G + 1, A]
PBT_PLOT = "hparams.png"  # each explored field of every agent over the generations


def write_pbt(out_dir: str, record: Any, env: str, batch_size: int) -> None:
    """Write ``record`` (:class:`~purejaxppo.scale.pbt.PBTRecord`) as lineage.csv, pbt.npz and hparams.png."""
    fields = sorted(record.hparams)
    with open(os.path.join(out_dir, PBT_LINEAGE), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["generation", "update", "agent", "parent", "fitness", "diverged", *fields])
        for g, update in enumerate(record.updates):
            for a in range(record.parent.shape[1]):
                fit = record.fitness[g, a]
                w.writerow([g + 1, int(update), a, int(record.parent[g, a]), "" if not np.isfinite(fit) else float(fit),
                            int(record.diverged[g, a]), *[float(record.hparams[k][g + 1, a]) for k in fields]])
    np.savez_compressed(os.path.join(out_dir, PBT_ARRAYS), updates=record.updates, env_steps=record.updates * batch_size,
                        parent=record.parent, fitness=record.fitness, diverged=record.diverged,
                        **{f"hparams__{k}": v for k, v in record.hparams.items()})
    plot_hparams(os.path.join(out_dir, PBT_PLOT), record, env)


def report_lines(record: Any) -> list[str]:
    """What the command prints after a PBT sweep: generations, copies, the explored values of the
    fittest agent at the last generation, and the agents that diverged and were replaced."""
    if not len(record.updates):
        return ["pbt: no generation (the run has no more updates than one interval)"]
    copies = int((record.parent != np.arange(record.parent.shape[1])).sum())
    lines = [(f"pbt: {len(record.updates)} generations (updates {', '.join(map(str, record.updates[:6]))}"
             f"{', ...' if len(record.updates) > 6 else ''}), {copies} copies; lineage in {PBT_LINEAGE}, "
             f"values over time in {PBT_PLOT}")]
    fitness = np.where(np.isfinite(record.fitness[-1]), record.fitness[-1], -np.inf)
    best = int(np.argmax(fitness))
    values = ", ".join(f"{k}={v[-1, best]:.4g}" for k, v in sorted(record.hparams.items()))
    lines.append(f"pbt: fittest at the last generation: agent {best} (fitness {fitness[best]:.1f}): {values}")
    if record.diverged.any():
        g, a = np.nonzero(record.diverged)
        shown = ", ".join(f"agent {ai} at update {record.updates[gi]}" for gi, ai in list(zip(g, a))[:5])
        more = f" and {len(a) - 5} more" if len(a) > 5 else ""
        lines.append(f"pbt: {len(a)} diverged agent(s) replaced by selection: {shown}{more}")
    return lines


def plot_hparams(path: str, record: Any, env: str, population: int | None = None) -> None:
    """One panel per explored field: every agent's value after each generation (log scale where the
    values span more than a factor of 10), agents of one population in one colour per population."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fields = sorted(record.hparams)
    fig = Figure(figsize=(4.2 * max(len(fields), 1), 3.4))
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(1, max(len(fields), 1)))
    x = np.concatenate([[0], record.updates])
    n_agents = record.parent.shape[1] if record.parent.ndim == 2 else next(iter(record.hparams.values())).shape[1]
    population = population or n_agents
    for ax, field in zip(axes, fields):
        values = record.hparams[field]
        for a in range(n_agents):
            ax.step(x, values[:, a], where="post", lw=0.8, alpha=0.6, color=f"C{a // population % 10}")
        positive = values[np.isfinite(values)]
        if positive.size and positive.min() > 0 and positive.max() / positive.min() > 10:
            ax.set_yscale("log")
        ax.set_title(field, fontsize=9)
        ax.set_xlabel("update")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{env}: PBT population's hyperparameters ({n_agents} agents, {len(record.updates)} generations)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
