"""PPO loss terms, the PPO loss, and the KL-penalty coefficient controller: small pure functions.

The terms take flat batches ``[B]`` and return scalars. References:
Schulman et al., "Proximal Policy Optimization Algorithms" (2017), eqs. (7) and (8);
Huang et al., "The 37 Implementation Details of PPO" (2022) for the value clipping.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


def clipped_surrogate_loss(
    ratio: jax.Array, advantages: jax.Array, clip_eps: jax.Array | float
) -> tuple[jax.Array, jax.Array]:
    """Negative clipped surrogate objective, L^CLIP of eq. (7), to minimise.

        L = -mean( min(r_t A_t, clip(r_t, 1 - eps, 1 + eps) A_t) )

    ``clip_eps = 0`` turns clipping off and gives the plain surrogate ``-mean(r_t A_t)``
    (use it with a KL penalty).

    Returns:
        ``(loss, clipfrac)``, clipfrac being the fraction of samples with ``|r - 1| > eps``.
    """
    assert ratio.ndim == 1 and ratio.shape == advantages.shape, (ratio.shape, advantages.shape)
    clipping = clip_eps > 0
    unclipped = ratio * advantages
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages
    objective = jnp.where(clipping, jnp.minimum(unclipped, clipped), unclipped)
    clipfrac = jnp.where(clipping, jnp.mean((jnp.abs(ratio - 1.0) > clip_eps).astype(jnp.float32)), 0.0)
    return -jnp.mean(objective), clipfrac


def kl_estimate(log_ratio: jax.Array) -> jax.Array:
    """Sample estimate of KL[pi_old || pi_new] from ``log r = log pi_new(a|s) - log pi_old(a|s)``
    with ``a ~ pi_old``:  mean( (r - 1) - log r ).

    Each term is >= 0 and its expectation is the KL exactly (the "k3" estimator, Schulman
    2020); its gradient is the gradient of the KL, so the same function is the penalty
    term of eq. (8) and the ``approx_kl`` metric.
    """
    assert log_ratio.ndim == 1, log_ratio.shape
    return jnp.mean(jnp.expm1(log_ratio) - log_ratio)


def value_loss(
    values: jax.Array,
    old_values: jax.Array,
    returns: jax.Array,
    vf_clip_eps: jax.Array | float,
    clip: bool,
) -> jax.Array:
    """0.5 * mean((V - R)^2); with ``clip``, the pessimistic max of that and the loss of
    ``V_old + clip(V - V_old, -eps, eps)``."""
    assert values.ndim == 1 and values.shape == old_values.shape == returns.shape
    unclipped = jnp.square(values - returns)
    if not clip:
        return 0.5 * jnp.mean(unclipped)
    v_clipped = old_values + jnp.clip(values - old_values, -vf_clip_eps, vf_clip_eps)
    return 0.5 * jnp.mean(jnp.maximum(unclipped, jnp.square(v_clipped - returns)))


def normalize_advantages(advantages: jax.Array, eps: float = 1e-8) -> jax.Array:
    """(A - mean A) / (std A + eps) over the batch."""
    return (advantages - advantages.mean()) / (advantages.std() + eps)


def explained_variance(values: jax.Array, returns: jax.Array) -> jax.Array:
    """1 - Var[R - V] / Var[R] (NaN when the returns have no variance)."""
    var_r = jnp.var(returns)
    return jnp.where(var_r > 0, 1.0 - jnp.var(returns - values) / jnp.where(var_r > 0, var_r, 1.0), jnp.nan)


# ---- the PPO loss ------------------------------------------------------------------------
class LossInfo(NamedTuple):
    """The terms of one minibatch's loss (each ``[]``); also the per-update loss metrics."""

    policy_loss: jax.Array  # -L^CLIP (+ beta * KL with a KL penalty)
    value_loss: jax.Array  # L^VF
    entropy: jax.Array  # mean entropy S of the policy
    approx_kl: jax.Array  # KL[pi_old || pi] estimate (kl_estimate)
    clipfrac: jax.Array  # fraction of samples with |r - 1| > clip_eps


def ppo_loss(
    apply_fn: Callable[[Any, jax.Array], tuple[Any, jax.Array]],
    dist: Any,
    params: Any,
    batch: Any,
    hparams: Any,
    kl_coef: jax.Array,
    *,
    kl_penalty: bool,
    clip_vloss: bool,
) -> tuple[jax.Array, LossInfo]:
    """The loss PPO minimises on a minibatch, eqs. (7)-(9) of Schulman et al. (2017)::

        L = -L^CLIP [+ beta * KL]  +  c1 * L^VF  -  c2 * S[pi]

    Args:
        apply_fn: ``apply_fn(params, obs [B, ...]) -> (policy output, values [B])``.
        dist: the action distribution (:mod:`purejaxppo.core.distributions`).
        batch: ``obs``, ``action``, ``log_prob`` (of the acting policy), ``value`` (its value
            estimates), ``advantage`` and ``target`` (the return targets), each ``[B, ...]``.
        hparams: ``clip_eps``, ``vf_clip_eps``, ``ent_coef`` (c2) and ``vf_coef`` (c1).
        kl_coef: beta, used when ``kl_penalty`` is on.

    Returns:
        ``(loss, LossInfo)``.
    """
    pi, values = apply_fn(params, batch.obs)
    log_ratio = dist.log_prob(pi, batch.action) - batch.log_prob
    ratio = jnp.exp(log_ratio)
    policy_loss, clipfrac = clipped_surrogate_loss(ratio, batch.advantage, hparams.clip_eps)
    approx_kl = kl_estimate(log_ratio)
    if kl_penalty:
        policy_loss = policy_loss + kl_coef * approx_kl
    v_loss = value_loss(values, batch.value, batch.target, hparams.vf_clip_eps, clip_vloss)
    entropy = jnp.mean(dist.entropy(pi, batch.action))
    total = policy_loss - hparams.ent_coef * entropy + hparams.vf_coef * v_loss
    return total, LossInfo(policy_loss, v_loss, entropy, approx_kl, clipfrac)


# ---- KL penalty coefficient ---------------------------------------------------------
class KLControllerState(NamedTuple):
    coef: jax.Array  # [] current penalty coefficient beta


def kl_controller_init(initial_coef: jax.Array | float) -> KLControllerState:
    """The controller's state before the first update: beta = ``initial_coef``."""
    return KLControllerState(jnp.asarray(initial_coef, jnp.float32))


def adaptive_kl_update(
    state: KLControllerState, measured_kl: jax.Array, kl_target: jax.Array | float
) -> KLControllerState:
    """The PPO paper's rule (section 4), applied after each policy update::

        d < d_targ / 1.5  ->  beta <- beta / 2
        d > d_targ * 1.5  ->  beta <- beta * 2
    """
    coef = state.coef
    coef = jnp.where(measured_kl < kl_target / 1.5, coef / 2.0, jnp.where(measured_kl > kl_target * 1.5, coef * 2.0, coef))
    return KLControllerState(coef)


def proportional_kl_update(
    state: KLControllerState,
    measured_kl: jax.Array,
    kl_target: jax.Array | float,
    n_samples: jax.Array | int,
    horizon: jax.Array | float,
) -> KLControllerState:
    """The proportional controller of Ziegler et al., "Fine-Tuning Language Models from
    Human Preferences" (2019), section 2.2, applied after each batch of ``n_samples``::

        e     = clip(KL / KL_target - 1, -0.2, 0.2)
        beta <- beta * (1 + K_beta * e),   K_beta = n_samples / horizon
    """
    error = jnp.clip(measured_kl / kl_target - 1.0, -0.2, 0.2)
    return KLControllerState(state.coef * (1.0 + error * n_samples / horizon))
