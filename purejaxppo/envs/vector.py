"""Stepping many environments at once: each resetting itself, or sharing a few resets (optimistic resets).

``make_vector_step(env, how, reset_ratio)`` returns ``vstep(keys [N], states, actions) -> (obs,
states, reward, terminated, truncated, final_obs)`` over ``N`` environments, the vmapped
:meth:`~purejaxppo.envs.adapter.EnvAdapter.step` contract.

With ``reset_ratio`` k > 1, a step computes ``N / k`` fresh reset states instead of one per
environment (a reset is what costs most in procedurally generated worlds such as Craftax's),
and hands them out to the environments whose episode ended: the j-th environment (in index
order) that ended takes reset ``j mod (N / k)``. Environments that end at the same step get
distinct resets as long as no more than ``N / k`` end together; beyond that some start from
the same state (with their own keys afterwards), which the Craftax authors measured to cost
nothing in learning. Every environment's step is its own; only where episodes restart changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def make_vector_step(env: Any, how: str, reset_ratio: int = 1) -> Callable:
    """The vector step of the adapted environment ``env`` (``how`` maps continuous actions)."""
    if reset_ratio == 1:
        return jax.vmap(lambda k, s, a: env.step(k, s, a, how))

    inner, params = env.env, env.params

    def step_without_reset(key, state, action):
        key_step, key_reset = jax.random.split(key)
        obs, state, reward, terminated, _ = inner.step_env(key_step, state, env.prepare_action(action, how), params)
        truncated = inner.is_truncated(state, params)
        return env.flat(obs), state, jnp.asarray(reward, jnp.float32), jnp.asarray(terminated, bool), \
            jnp.asarray(truncated, bool), key_reset

    def vstep(keys, states, actions):
        obs, states, reward, terminated, truncated, reset_keys = jax.vmap(step_without_reset)(keys, states, actions)
        n = keys.shape[0]
        assert n % reset_ratio == 0, f"reset_ratio {reset_ratio} does not divide {n} environments"
        resets = n // reset_ratio
        reset_obs, reset_states = jax.vmap(lambda k: env.reset_unflattened(k))(reset_keys[:resets])
        done = terminated | truncated
        which = (jnp.cumsum(done.astype(jnp.int32)) - 1) % resets  # the j-th ended environment takes reset j

        def pick(fresh, stepped):
            chosen = fresh[which]
            return jnp.where(done.reshape((n,) + (1,) * (stepped.ndim - 1)), chosen, stepped)

        next_states = jax.tree_util.tree_map(pick, reset_states, states)
        next_obs = pick(jax.vmap(env.flat)(reset_obs), obs)
        return next_obs, next_states, reward, terminated, truncated, obs

    return vstep
