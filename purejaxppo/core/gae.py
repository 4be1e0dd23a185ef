"""Generalised Advantage Estimation with termination and truncation kept apart."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def gae_advantages(
    rewards_t: jax.Array,
    values_t: jax.Array,
    next_values_t: jax.Array,
    terminated_t: jax.Array,
    done_t: jax.Array,
    gamma: jax.Array | float,
    gae_lambda: jax.Array | float,
    unroll: int = 1,
) -> tuple[jax.Array, jax.Array]:
    """GAE(gamma, lambda) of Schulman et al. (2016), time-major.

    With ``V'_t`` the value of the state the step reached (``next_values_t``)::

        delta_t = r_t + gamma * (1 - terminated_t) * V'_t - V(s_t)
        A_t     = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}
        R_t     = A_t + V(s_t)

    A termination cuts the bootstrap (the state reached has value 0). A truncation (time
    limit) keeps it: ``V'_t`` is the critic's value of the final observation, and only the
    lambda-trace is cut, since ``t + 1`` starts a new episode. Passing
    ``terminated_t = done_t`` reproduces code that treats a truncation as a termination.

    Args:
        rewards_t: ``[T, ...]`` rewards.
        values_t: ``[T, ...]`` V(s_t).
        next_values_t: ``[T, ...]`` value of the observation reached by step t, before any reset.
        terminated_t: ``[T, ...]`` true end of episode at step t.
        done_t: ``[T, ...]`` terminated or truncated at step t.
        gamma, gae_lambda: scalars (may be traced).
        unroll: steps per iteration of the compiled loop (speed only).

    Returns:
        ``(advantages [T, ...], returns [T, ...])``.
    """
    assert rewards_t.ndim >= 1, rewards_t.shape
    for x in (values_t, next_values_t, terminated_t, done_t):
        assert x.shape == rewards_t.shape, (x.shape, rewards_t.shape)
    not_term = 1.0 - terminated_t.astype(rewards_t.dtype)
    not_done = 1.0 - done_t.astype(rewards_t.dtype)
    deltas = rewards_t + gamma * not_term * next_values_t - values_t
    decay = gamma * gae_lambda * not_done

    def step(adv_tp1, inputs):
        delta_t, decay_t = inputs
        adv_t = delta_t + decay_t * adv_tp1
        return adv_t, adv_t

    _, advantages = jax.lax.scan(step, jnp.zeros_like(deltas[0]), (deltas, decay), reverse=True, unroll=unroll)
    return advantages, advantages + values_t
