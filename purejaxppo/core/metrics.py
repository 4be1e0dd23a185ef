"""The metric schema: every per-update metric, in one order, used by every sink.

The training program returns exactly these metrics (``{name: [num_updates]}``); ``metrics.csv``
has ``env_steps`` followed by these columns in this order, and TensorBoard and W&B receive the
same rows. Names follow CleanRL's (``charts/...``, ``losses/...``).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Metric(NamedTuple):
    name: str
    doc: str


METRICS = (
    Metric("charts/episodic_return", "mean return of the episodes that ended during the update's rollout (NaN if none)"),
    Metric("charts/episodic_length", "mean length of those episodes (NaN if none)"),
    Metric("charts/learning_rate", "learning rate of the update (annealed when anneal_lr is on)"),
    Metric("losses/policy_loss", "-L^CLIP (+ beta * KL with a KL penalty), mean over the minibatches and epochs run"),
    Metric("losses/value_loss", "value loss L^VF, mean over the minibatches and epochs run"),
    Metric("losses/entropy", "mean entropy of the policy on the minibatches"),
    Metric("losses/approx_kl", "KL[pi_old || pi] estimate during the epochs, mean over the minibatches"),
    Metric("losses/clipfrac", "fraction of samples whose ratio left [1 - clip_eps, 1 + clip_eps]"),
    Metric("losses/kl_coef", "KL penalty coefficient beta used by the update"),
    Metric("losses/explained_variance", "1 - Var[R - V] / Var[R] of the batch's value estimates (NaN if Var[R] = 0)"),
    Metric("charts/episodes", "episodes that ended during the update's rollout"),
    Metric("losses/epochs", "epochs run (fewer after a target-KL early stop)"),
    Metric("losses/post_update_kl", "KL[pi_old || pi_new] over the whole batch after the update (adaptive penalty; else NaN)"),
)
METRIC_NAMES = tuple(m.name for m in METRICS)
# algo trpo: PPO's columns (the loss columns measured on the TRPO step, the value loss on the critic's fit), then its own
TRPO_METRICS = METRICS + (
    Metric("trpo/step_kl", "exact mean KL[pi_old || pi_new] of the accepted step (0 when none was)"),
    Metric("trpo/surrogate_improvement", "L(theta_new) - L(theta_old) of the accepted step (0 when none was)"),
    Metric("trpo/backtracks", "line-search shrinkings before the accepted step (backtrack_iters when none was)"),
    Metric("trpo/accepted", "1 when the line search accepted a step, 0 when the old policy was kept"),
)
TRPO_METRIC_NAMES = tuple(m.name for m in TRPO_METRICS)
SCHEMAS = {"ppo": METRIC_NAMES, "trpo": TRPO_METRIC_NAMES}
# Metrics that are finite in every healthy update (the others may be NaN by definition).
FINITE_METRICS = ("losses/policy_loss", "losses/value_loss", "losses/entropy", "losses/approx_kl")


def update_metrics(schema: tuple[str, ...] = METRIC_NAMES, **values: Any) -> dict[str, jax.Array]:
    """The metrics of one update, keyed by name in ``schema``'s order; refuses a missing or unknown one.

    Keywords are the names' last parts (``episodic_return=...``, ``policy_loss=...``).
    """
    short = {name.split("/")[1]: name for name in schema}
    if set(values) != set(short):
        raise KeyError(f"metrics: got {sorted(values)}; the schema has {sorted(short)}")
    return {name: jnp.asarray(values[key]) for key, name in short.items()}


def final_return(metrics: dict[str, Any], fraction: float = 0.1) -> float | np.ndarray:
    """Mean return of the episodes that ended in the last ``fraction`` of env steps.

    Each update reports the mean return of its finished episodes and their count, so the
    mean over several updates weights each update by its episode count. NaN when no
    episode ended in that window. Leading axes (agents of a sweep) are kept.
    """
    returns = np.asarray(metrics["charts/episodic_return"], np.float64)
    counts = np.asarray(metrics["charts/episodes"], np.float64)
    n = returns.shape[-1]
    k = max(1, math.ceil(n * fraction))
    r, c = returns[..., -k:], counts[..., -k:]
    # A non-finite return of an update that ended episodes stays non-finite (a diverged run).
    with np.errstate(invalid="ignore"):
        total = np.where(c > 0, r * c, 0.0).sum(axis=-1)
    count = c.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def first_non_finite(metrics: dict[str, Any]) -> tuple[int, str] | None:
    """``(update index, metric name)`` of the first non-finite value among the metrics that are
    finite in a healthy run: the losses, and the return of an update that ended episodes. None if all are."""
    first: tuple[int, str] | None = None
    returns = np.asarray(metrics["charts/episodic_return"], np.float64)
    ended = np.asarray(metrics["charts/episodes"]) > 0
    checks = [(name, ~np.isfinite(np.asarray(metrics[name], np.float64))) for name in FINITE_METRICS]
    checks.append(("charts/episodic_return", ended & ~np.isfinite(returns)))
    for name, bad in checks:
        hits = np.flatnonzero(bad.reshape(-1))
        if hits.size and (first is None or hits[0] < first[0]):
            first = (int(hits[0]), name)
    return first
