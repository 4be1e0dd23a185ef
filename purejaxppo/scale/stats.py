"""Statistics of a sweep over seeds: bootstrap intervals and the per-setting table."""

from __future__ import annotations

from typing import Any

import numpy as np


def bootstrap_ci(values: np.ndarray, key: int = 0, n: int = 2000, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (NaNs dropped)."""
    v = np.asarray(values, np.float64)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    if v.size == 1:
        return float(v[0]), float(v[0])
    rng = np.random.default_rng(key)
    means = rng.choice(v, size=(n, v.size), replace=True).mean(axis=1)
    lo, hi = np.percentile(means, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return float(lo), float(hi)


def summarize(result: Any) -> list[dict[str, Any]]:
    """One row per setting, best mean final return first."""
    rows = []
    diverged = getattr(result, "diverged", None)
    for g, setting in enumerate(result.settings):
        finals = result.final_return[g]
        lo, hi = bootstrap_ci(finals, key=g)
        aucs = np.asarray(result.auc[g], np.float64)
        rows.append(
            {
                **setting,
                "mean_final_return": float(np.nanmean(finals)) if np.any(~np.isnan(finals)) else float("nan"),
                "std_final_return": float(np.nanstd(finals)) if np.any(~np.isnan(finals)) else float("nan"),
                "ci95_low": lo,
                "ci95_high": hi,
                "mean_auc": float(np.nanmean(aucs)) if np.any(~np.isnan(aucs)) else float("nan"),
                "seeds": result.seeds,
                # seeds whose training diverged: left out of the means above (their scores are NaN)
                "diverged": int(np.sum(diverged[g])) if diverged is not None else 0,
                "setting": g,
            }
        )
    return sorted(rows, key=lambda r: (-np.nan_to_num(r["mean_final_return"], nan=-np.inf), r["setting"]))


def format_table(rows: list[dict[str, Any]]) -> str:
    fields = sorted({k for r in rows for k in r} - {"mean_final_return", "std_final_return", "ci95_low", "ci95_high", "mean_auc", "seeds", "setting", "diverged"})
    diverged = any(r.get("diverged") for r in rows)  # a column only where some agent diverged
    head = ["rank", *fields, "final return", "std", "95% CI", "AUC", *(["diverged"] if diverged else [])]
    lines = []
    for rank, r in enumerate(rows, 1):
        lines.append([str(rank), *[f"{r[f]:.4g}" for f in fields], f"{r['mean_final_return']:.1f}", f"{r['std_final_return']:.1f}",
                      f"[{r['ci95_low']:.1f}, {r['ci95_high']:.1f}]", f"{r['mean_auc']:.1f}",
                      *([f"{r.get('diverged', 0)}/{r['seeds']}"] if diverged else [])])
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([fmt(head), *map(fmt, lines)])


# ---- across tasks (Agarwal et al., 2021, "Deep RL at the edge of the statistical precipice") ----


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50% of all runs' scores (``scipy.stats.trim_mean``
    with 25% cut from each end: ``floor(0.25 n)`` values from each side)."""
    v = np.sort(np.asarray(scores, np.float64).reshape(-1))
    cut = int(0.25 * v.size)
    return float(v[cut:v.size - cut].mean())


def stratified_bootstrap_ci(scores: np.ndarray, statistic=iqm, n: int = 2000, level: float = 0.95,
                            key: int = 0) -> tuple[float, float]:
    """Percentile interval of ``statistic`` over stratified bootstrap resamples of ``scores [tasks, seeds]``:
    each resample draws, for every task independently, as many seeds as it has, with replacement."""
    s = np.asarray(scores, np.float64)
    if s.ndim != 2:
        raise ValueError(f"scores must be [tasks, seeds], got shape {s.shape}")
    rng = np.random.default_rng(key)
    tasks, seeds = s.shape
    picks = rng.integers(0, seeds, size=(n, tasks, seeds))
    resampled = np.take_along_axis(np.broadcast_to(s, (n, tasks, seeds)), picks, axis=2)
    stats = np.array([statistic(r) for r in resampled])
    lo, hi = np.percentile(stats, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return float(lo), float(hi)


def performance_profile(scores: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """Fraction of runs (all tasks and seeds) whose score exceeds each ``tau``."""
    v = np.asarray(scores, np.float64).reshape(-1)
    return (v[None, :] > np.asarray(taus, np.float64)[:, None]).mean(axis=1)
