"""From a trajectory to a training batch: reward scaling, values, GAE, flattening."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from purejaxppo.core.act import observe
from purejaxppo.core.config import HParams
from purejaxppo.core.gae import gae_advantages
from purejaxppo.core.networks import ActorCritic
from purejaxppo.core.normalize import rms_update
from purejaxppo.core.parts import Parts
from purejaxppo.core.rollout import Transition
from purejaxppo.core.state import RunnerState


class Batch(NamedTuple):
    """A flat training batch ``[B, ...]`` (B = num_envs * num_steps)."""

    obs: jax.Array  # [B, obs_dim] normalised as the acting policy saw them
    action: jax.Array  # [B] or [B, D]
    log_prob: jax.Array  # [B] log pi_old(a|s)
    value: jax.Array  # [B] V_old(s)
    advantage: jax.Array  # [B] GAE
    target: jax.Array  # [B] return targets A + V_old


def scale_rewards(parts: Parts, state: RunnerState, traj: Transition, hparams: HParams):
    """Rewards times ``reward_scale``, then divided by the running std of the discounted return
    (when ``normalize_reward``) and clipped.

    ``reward_scale`` is a static setting, and a scale of 1 leaves the program without the
    multiplication: programs built for the same run (fused, chunked, resumed) then fuse alike,
    which keeps them bit-identical."""
    config, gamma = parts.config, hparams.gamma
    reward = traj.reward * config.reward_scale if config.reward_scale != 1.0 else traj.reward
    if not config.normalize_reward:
        return state, reward
    done = traj.terminated | traj.truncated

    def step(g, inputs):
        r_t, done_t = inputs
        g = g * gamma + r_t
        return jnp.where(done_t, 0.0, g), g

    disc_return, returns_t = jax.lax.scan(step, state.disc_return, (reward, done))
    ret_rms = rms_update(state.ret_rms, parts.comm.gather(returns_t, axis=1))
    rewards = jnp.clip(reward / jnp.sqrt(ret_rms.var + 1e-8), -config.clip_reward, config.clip_reward)
    return state.replace(disc_return=disc_return, ret_rms=ret_rms), rewards


def advantages_and_targets(parts: Parts, traj, rewards: jax.Array, values: jax.Array, last_value: jax.Array,
                           final_value: Callable[[], jax.Array], hparams: HParams) -> tuple[jax.Array, jax.Array]:
    """GAE of a trajectory ``[T, N]`` from V(s_t), V(s_T) and, when truncations are bootstrapped,
    ``final_value()``: V(final observation) ``[T, N]`` (asked for only then)."""
    config = parts.config
    next_values = jnp.concatenate([values[1:], last_value[None]], axis=0)  # V(s_{t+1})
    done = traj.terminated | traj.truncated
    if config.bootstrap_truncation:
        # after a truncation s_{t+1} is a reset state: bootstrap from the final observation instead
        next_values = jnp.where(traj.truncated, final_value(), next_values)
        terminated = traj.terminated
    else:
        terminated = done
    return gae_advantages(rewards, values, next_values, terminated, done, hparams.gamma, hparams.gae_lambda,
                          unroll=parts.tuning.gae_unroll)


def truncated_values(value: Callable[[jax.Array], jax.Array], truncated: jax.Array, final_obs: jax.Array) -> jax.Array:
    """``value(final_obs)`` where ``truncated`` (``[T, N]``), 0 elsewhere, valuing only the truncated rows.

    The truncated rows are valued ``N`` at a time, as many times as there are truncations: with
    time limits longer than the rollout that is once per update, ``N`` rows instead of
    ``T * N``, and any number of truncations stays exact. The k-th truncated row is found by a
    binary search in the running count of truncations (no scatter over the trajectory). Under
    ``vmap`` (sweeps) the loop runs as often as the most truncated member needs.
    """
    shape, rows = truncated.shape, truncated.size
    width = shape[-1]  # rows valued per pass
    flat_obs = final_obs.reshape((rows,) + final_obs.shape[len(shape):])
    running = jnp.cumsum(truncated.reshape(-1).astype(jnp.int32))  # truncations up to and including each row
    count = running[-1]

    def chunk(carry):
        start, out = carry
        wanted = start + 1 + jnp.arange(width, dtype=jnp.int32)  # the (start+1)-th ... truncations
        picked = jnp.searchsorted(running, wanted, side="left", method="scan_unrolled").astype(jnp.int32)
        v = value(flat_obs[jnp.minimum(picked, rows - 1)])
        return start + width, out.at[picked].set(v, mode="drop")  # rows past the last truncation are dropped

    _, out = jax.lax.while_loop(lambda c: c[0] < count, chunk, (jnp.int32(0), jnp.zeros((rows,), jnp.float32)))
    return out.reshape(shape)


def make_batch(parts: Parts, state: RunnerState, traj: Transition, hparams: HParams) -> tuple[RunnerState, Batch]:
    """Advantages and targets of the trajectory, flattened to a batch of every device's environments.

    The batch is normalised with the statistics the rollout used; they are then updated.
    """
    config, network, comm = parts.config, parts.network, parts.comm
    state, rewards = scale_rewards(parts, state, traj, hparams)
    obs = observe(config, state.obs_rms, traj.obs)  # [T, N, D]
    values = network.apply(state.params, obs, method=ActorCritic.value)  # [T, N]

    def value(o):  # V of raw observations
        return network.apply(state.params, observe(config, state.obs_rms, o), method=ActorCritic.value)

    last_value = value(state.obs)

    def final_value():
        if traj.final_value is not None:  # computed in the rollout
            return traj.final_value
        if parts.tuning.truncation == "compact":  # only the truncated steps' final observations
            return truncated_values(value, traj.truncated, traj.final_obs)
        return value(traj.final_obs)  # "batched": every final observation

    advantages, targets = advantages_and_targets(parts, traj, rewards, values, last_value, final_value, hparams)

    def flat(x):  # [T, N, ...] -> [T * N, ...]; with data parallelism, every device's environments first
        return comm.gather(x, axis=1).reshape((config.batch_size,) + x.shape[2:])

    batch = Batch(flat(obs), flat(traj.action), flat(traj.log_prob), flat(values), flat(advantages), flat(targets))
    if config.normalize_obs:
        state = state.replace(obs_rms=rms_update(state.obs_rms, comm.gather(traj.obs, axis=1)))
    return state, batch
