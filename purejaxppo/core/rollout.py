"""Collecting a rollout: ``num_steps`` steps of every environment with the current policy."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from purejaxppo.core.act import observe
from purejaxppo.core.networks import ActorCritic
from purejaxppo.core.parts import Parts
from purejaxppo.core.state import RunnerState


class Transition(NamedTuple):
    """One rollout step of N environments (time-major when stacked: ``[T, N, ...]``)."""

    obs: jax.Array  # [N, obs_dim] raw observation the action was chosen from
    action: jax.Array  # [N] or [N, D]
    log_prob: jax.Array  # [N]
    reward: jax.Array  # [N] raw reward
    terminated: jax.Array  # [N]
    truncated: jax.Array  # [N]
    final_value: jax.Array | None  # [N] V(observation reached before the reset) where truncated, else 0
    final_obs: jax.Array | None = None  # [N, obs_dim] that observation, when the batched pass values it


class EpisodeStats(NamedTuple):
    """Sums over the episodes that ended during a rollout."""

    return_sum: jax.Array  # [] float32
    length_sum: jax.Array  # [] int32
    count: jax.Array  # [] int32

    @classmethod
    def zeros(cls) -> EpisodeStats:
        return cls(jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))

    def means(self) -> tuple[jax.Array, jax.Array]:
        """Mean return and mean length of the episodes (NaN when none ended)."""
        n = jnp.maximum(self.count, 1).astype(jnp.float32)
        ended = self.count > 0
        return (jnp.where(ended, self.return_sum / n, jnp.nan),
                jnp.where(ended, self.length_sum.astype(jnp.float32) / n, jnp.nan))


class StepCarry(NamedTuple):
    """What the rollout scan carries from one step to the next."""

    env_state: Any  # [N, ...]
    obs: jax.Array  # [N, obs_dim]
    episode_return: jax.Array  # [N]
    episode_length: jax.Array  # [N]
    stats: EpisodeStats  # [] sums, or [N] per environment (tuning.episode_stats == "env")


def truncation_value(parts: Parts, state: RunnerState, truncated: jax.Array, final_obs: jax.Array) -> jax.Array:
    """``[N]`` V(final observation) where a time limit cut the episode, for the truncation bootstrap.

    Elsewhere the value is not needed (the batched critic pass computes V(next obs)), and
    truncations are rare, so the critic runs only on steps that have one (``tuning.truncation
    == "branch"``; with ``"batched"`` the batch pass computes it, see ``batch.py``).
    """
    zeros = jnp.zeros((parts.num_local_envs,), jnp.float32)
    if not parts.config.bootstrap_truncation:
        return zeros

    def value(o):
        return parts.network.apply(state.params, observe(parts.config, state.obs_rms, o), method=ActorCritic.value)

    return jax.lax.cond(jnp.any(truncated), value, lambda o: zeros, final_obs)


def track_episodes(carry: StepCarry, reward: jax.Array, done: jax.Array) -> tuple[jax.Array, jax.Array, EpisodeStats]:
    """Add a step to the running episodes; count the ones that ended and restart them at zero.

    The sums have the shape of ``carry.stats``: scalars (summed over environments every
    step) or ``[N]`` (per environment, summed once after the rollout).
    """
    ep_ret = carry.episode_return + reward
    ep_len = carry.episode_length + 1
    s = carry.stats
    per_env = s.count.ndim == 1
    total = (lambda x: x) if per_env else jnp.sum
    stats = EpisodeStats(
        s.return_sum + total(jnp.where(done, ep_ret, 0.0)),
        s.length_sum + total(jnp.where(done, ep_len, 0)),
        s.count + total(done.astype(jnp.int32)),
    )
    return jnp.where(done, 0.0, ep_ret), jnp.where(done, 0, ep_len), stats


def collect(parts: Parts, state: RunnerState, key: jax.Array) -> tuple[RunnerState, Transition, EpisodeStats]:
    """Run ``num_steps`` steps of every environment; returns the trajectory ``[T, N, ...]``."""
    n_envs, comm = parts.config.num_envs, parts.comm

    tuning = parts.tuning
    keep_final_obs = parts.config.bootstrap_truncation and tuning.truncation != "branch"  # valued in make_batch

    def step(carry: StepCarry, key_t: jax.Array):
        act_key_t, env_key_t = jax.random.split(key_t)
        env_keys_t = comm.own(jax.random.split(env_key_t, n_envs))
        action, log_prob = parts.act(state.params, state.obs_rms, carry.obs, act_key_t)
        next_obs, env_state, reward, terminated, truncated, final_obs = parts.vstep(env_keys_t, carry.env_state, action)
        if keep_final_obs:
            final_value = None
        else:
            final_value, final_obs = truncation_value(parts, state, truncated, final_obs), None
        ep_ret, ep_len, stats = track_episodes(carry, reward, terminated | truncated)
        transition = Transition(carry.obs, action, log_prob, reward, terminated, truncated, final_value, final_obs)
        return StepCarry(env_state, next_obs, ep_ret, ep_len, stats), transition

    stats = EpisodeStats.zeros()
    if tuning.episode_stats == "env":
        stats = jax.tree_util.tree_map(lambda x: jnp.zeros((parts.num_local_envs,), x.dtype), stats)
    start = StepCarry(state.env_state, state.obs, state.episode_return, state.episode_length, stats)
    end, traj = jax.lax.scan(step, start, jax.random.split(key, parts.config.num_steps), unroll=tuning.rollout_unroll)
    state = state.replace(
        env_state=end.env_state, obs=end.obs, episode_return=end.episode_return, episode_length=end.episode_length
    )
    stats = end.stats if tuning.episode_stats == "step" else jax.tree_util.tree_map(jnp.sum, end.stats)
    return state, traj, jax.tree_util.tree_map(comm.sum, stats)
