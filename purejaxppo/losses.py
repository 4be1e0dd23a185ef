"""PPO loss terms and the KL-penalty coefficient controller: small pure functions.

All functions take flat batches ``[B]`` and return scalars. References:
Schulman et al., "Proximal Policy Optimization Algorithms" (2017), eqs. (7) and (8);
Huang et al., "The 37 Implementation Details of PPO" (2022) for the value clipping.
"""

from __future__ import annotations

from typing import NamedTuple

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
    return (advantages - advantages.mean()) / (advantages.std() + eps)


def explained_variance(values: jax.Array, returns: jax.Array) -> jax.Array:
    """1 - Var[R - V] / Var[R] (NaN when the returns have no variance)."""
    var_r = jnp.var(returns)
    return jnp.where(var_r > 0, 1.0 - jnp.var(returns - values) / jnp.where(var_r > 0, var_r, 1.0), jnp.nan)


# ---- KL penalty coefficient ---------------------------------------------------------
class KLControllerState(NamedTuple):
    coef: jax.Array  # [] current penalty coefficient beta


def kl_controller_init(initial_coef: jax.Array | float) -> KLControllerState:
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
