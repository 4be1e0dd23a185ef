"""Stepping many environments at once: each resetting itself, or sharing a few resets (optimistic resets).

``make_vector_step(env, how, reset_ratio, resets)`` returns ``vstep(keys [N], states, actions) ->
(obs, states, reward, terminated, truncated, final_obs)`` over ``N`` environments, the vmapped
:meth:`~purejaxppo.envs.adapter.EnvAdapter.step` contract.

Each environment resetting itself can be laid out two ways (the ``resets`` layout,
:mod:`purejaxppo.core.tuning`), with the same numbers: ``"all"`` computes every environment's reset
state at every step and keeps it where the episode ended (gymnax's own step); ``"ended"`` computes
reset states only for the environments whose episode ended, from the same keys. Where a reset costs
much more than a step (Craftax builds a world, MJX solves the model's initial state) and few
episodes end per step, ``"ended"`` saves nearly all of it; the default, ``"env"``, takes it for the
environments that say so (``costly_reset = True`` on the environment's class).

With ``reset_ratio`` k > 1, a step computes ``N / k`` fresh reset states instead of one per
environment (a reset is what costs most in procedurally generated worlds such as Craftax's),
and hands them out to the environments whose episode ended: the j-th environment (in index
order) that ended takes reset ``j mod (N / k)``. Environments that end at the same step get
distinct resets as long as no more than ``N / k`` end together; beyond that some start from
the same state (with their own keys afterwards), which the Craftax authors measured to cost
nothing in learning. Every environment's step is its own; only where episodes restart changes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def make_vector_step(env: Any, how: str, reset_ratio: int = 1, resets: str = "env") -> Callable:
    """The vector step of the adapted environment ``env`` (``how`` maps continuous actions): with
    ``reset_ratio`` k > 1 the optimistic resets above, else each environment's own reset laid out
    as ``resets`` says (:data:`OWN_RESETS`; ``"env"``: ``"ended"`` where ``env.costly_reset``,
    else ``"all"``)."""
    if reset_ratio == 1:
        if resets == "env":
            resets = "ended" if env.costly_reset else "all"
        return OWN_RESETS[resets](env, how)

    step_without_reset = _step_without_reset(env, how)

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


def _step_without_reset(env: Any, how: str) -> Callable:
    """``(key, state, action) -> (obs, state, reward, terminated, truncated, reset key)``: one
    environment's step as gymnax's ``step`` takes it (the same split of ``key``), without the reset."""
    inner, params = env.env, env.params

    def step(key, state, action):
        key_step, key_reset = jax.random.split(key)
        obs, state, reward, terminated, _ = inner.step_env(key_step, state, env.prepare_action(action, how), params)
        truncated = inner.is_truncated(state, params)
        return env.flat(obs), state, jnp.asarray(reward, jnp.float32), jnp.asarray(terminated, bool), \
            jnp.asarray(truncated, bool), key_reset

    return step


def every_reset(env: Any, how: str) -> Callable:
    """Every environment computes its reset state at every step; those whose episode ended keep it."""
    return jax.vmap(lambda k, s, a: env.step(k, s, a, how))


RESET_PASSES = 16  # the ended environments' resets are computed N / RESET_PASSES at a time


def ended_resets(env: Any, how: str) -> Callable:
    """Only the environments whose episode ended compute a reset state, each from the key it
    would have used in :func:`every_reset`: the same numbers, without the resets that are thrown
    away.

    The ended environments are found in index order and reset ``ceil(N / RESET_PASSES)`` at a
    time, in as many passes as needed (none at a step where no episode ended). The k-th ended
    environment is found by a binary search in the running count of ended episodes (as the
    truncation value's compact layout does). Under ``vmap`` (sweeps) the passes run as often as
    the member with the most ended episodes needs.
    """
    step_without_reset = _step_without_reset(env, how)

    def vstep(keys, states, actions):
        obs, stepped, reward, terminated, truncated, reset_keys = jax.vmap(step_without_reset)(keys, states, actions)
        n = keys.shape[0]
        width = -(-n // RESET_PASSES)
        running = jnp.cumsum((terminated | truncated).astype(jnp.int32))  # ended episodes up to each environment
        count = running[-1]

        def one_pass(carry):
            start, next_obs, next_states = carry
            wanted = start + 1 + jnp.arange(width, dtype=jnp.int32)  # the (start+1)-th ... ended environments
            picked = jnp.searchsorted(running, wanted, side="left", method="scan_unrolled").astype(jnp.int32)
            fresh_obs, fresh = jax.vmap(env.reset)(reset_keys[jnp.minimum(picked, n - 1)])
            put = functools.partial(_put, picked)  # rows past the last ended environment are dropped
            return start + width, put(next_obs, fresh_obs), jax.tree_util.tree_map(put, next_states, fresh)

        _, next_obs, next_states = jax.lax.while_loop(lambda c: c[0] < count, one_pass, (jnp.int32(0), obs, stepped))
        return next_obs, next_states, reward, terminated, truncated, obs

    return vstep


def _put(rows: jax.Array, into: jax.Array, values: jax.Array) -> jax.Array:
    return into.at[rows].set(values.astype(into.dtype), mode="drop")


OWN_RESETS = {"all": every_reset, "ended": ended_resets}  # the resets layout -> the vector step
