"""Evaluating a trained policy: whole episodes in one compiled program."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from purejaxppo.networks import ActorCritic, distribution
from purejaxppo.normalize import rms_normalize


def make_evaluate(trainer, num_episodes: int, deterministic: bool = True, max_steps: int | None = None):
    """``evaluate(state, key) -> returns [num_episodes]``, pure and jittable.

    Runs ``num_episodes`` environments in parallel until each has finished one episode
    (or ``max_steps`` steps, by default the environment's time limit); the loop ends as
    soon as the last episode does, and step ``t`` draws its randomness from a key folded
    with ``t``. The policy acts on observations normalised with the run's statistics;
    ``deterministic`` takes the mode of the policy (argmax, or the Gaussian mean) instead
    of sampling.
    """
    env, config, network = trainer.env, trainer.config, trainer.network
    dist = distribution(env.action_kind == "continuous")
    limit = max_steps or int(getattr(env.params, "max_steps_in_episode", 1000))

    def evaluate(state, key: jax.Array) -> jax.Array:
        reset_key, run_key = jax.random.split(key)
        obs, env_state = jax.vmap(env.reset)(jax.random.split(reset_key, num_episodes))

        def step(carry):
            t, obs, env_state, ret, alive = carry
            act_key, env_key = jax.random.split(jax.random.fold_in(run_key, t))
            o = rms_normalize(state.obs_rms, obs, config.clip_obs) if config.normalize_obs else obs
            pi = network.apply(state.params, o, method=ActorCritic.policy)
            action = dist.mode(pi) if deterministic else dist.sample(act_key, pi)
            obs, env_state, reward, terminated, truncated, _ = jax.vmap(
                lambda k, s, a: env.step(k, s, a, clip=True)
            )(jax.random.split(env_key, num_episodes), env_state, action)
            ret = ret + reward * alive
            alive = alive * (1.0 - (terminated | truncated).astype(jnp.float32))
            return t + 1, obs, env_state, ret, alive

        def running(carry):  # stop as soon as every episode has ended, not at the time limit
            t, *_, alive = carry
            return (t < limit) & jnp.any(alive > 0)

        init = (jnp.zeros((), jnp.int32), obs, env_state, jnp.zeros(num_episodes), jnp.ones(num_episodes))
        _, _, _, returns, _ = jax.lax.while_loop(running, step, init)
        return returns

    return evaluate
