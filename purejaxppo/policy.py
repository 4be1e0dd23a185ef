"""Trained policies from run folders: ``load_policy(run_dir)``, evaluation and recorded episodes."""

from __future__ import annotations

import json
import os
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from purejaxppo.checkpoints import CheckpointError, Checkpointer
from purejaxppo.config import HParams, PPOConfig
from purejaxppo.evaluate import make_evaluate
from purejaxppo.networks import ActorCritic, distribution
from purejaxppo.normalize import RunningMeanStd, rms_normalize
from purejaxppo.runner import CHECKPOINT_DIR
from purejaxppo.train import Trainer, make_trainer


@struct.dataclass
class PolicyParams:
    """What acting needs: network parameters and the observation statistics of the run."""

    params: Any
    obs_rms: RunningMeanStd


class Policy(NamedTuple):
    """A policy loaded from a checkpoint.

    ``act(params, obs, key) -> action`` is pure and jittable; ``obs`` is one flat observation
    ``[obs_dim]`` or a batch ``[B, obs_dim]``.
    """

    act: Callable[[PolicyParams, jax.Array, jax.Array], jax.Array]
    params: PolicyParams
    config: PPOConfig
    step: int
    trainer: Trainer


def read_run_config(run_dir: str) -> PPOConfig:
    path = os.path.join(run_dir, "config.json")
    if not os.path.isdir(run_dir):
        raise CheckpointError(f"no run folder at {run_dir}")
    if not os.path.exists(path):
        raise CheckpointError(f"{run_dir} is not a run folder (it has no config.json)")
    with open(path) as f:
        return PPOConfig.from_dict(json.load(f))


def load_state(run_dir: str, step: int | None = None, log: Callable[[str], None] = print):
    """``(config, trainer, step, RunnerState)`` from the latest (or ``step``) checkpoint of a run."""
    config = read_run_config(run_dir)
    ckpt_dir = os.path.join(run_dir, CHECKPOINT_DIR)
    if not os.path.isdir(ckpt_dir):
        raise CheckpointError(f"{run_dir} has no checkpoints (it was trained with --checkpoint-every 0)")
    trainer = make_trainer(config)
    key = jax.random.key(config.seed)
    like = jax.eval_shape(trainer.init, key, HParams.from_config(config))
    checkpointer = Checkpointer(ckpt_dir)
    try:
        step, state, _, _ = checkpointer.restore(like, step=step, log=log)
    finally:
        checkpointer.close()
    return config, trainer, step, state


def make_act(trainer: Trainer, deterministic: bool = False):
    config, network = trainer.config, trainer.network
    dist = distribution(trainer.env.action_kind == "continuous")

    def act(params: PolicyParams, obs: jax.Array, key: jax.Array) -> jax.Array:
        obs = jnp.asarray(obs, jnp.float32)
        o = rms_normalize(params.obs_rms, obs, config.clip_obs) if config.normalize_obs else obs
        pi = network.apply(params.params, o, method=ActorCritic.policy)
        return dist.mode(pi) if deterministic else dist.sample(key, pi)

    return act


def load_policy(run_dir: str, step: int | None = None, deterministic: bool = False) -> Policy:
    """Load a run's policy from its latest (or ``step``) checkpoint.

    Example:
        >>> policy = load_policy("runs/cartpole")                    # doctest: +SKIP
        >>> action = jax.jit(policy.act)(policy.params, obs, key)    # doctest: +SKIP
    """
    config, trainer, step, state = load_state(run_dir, step)
    params = PolicyParams(params=state.params, obs_rms=state.obs_rms)
    return Policy(make_act(trainer, deterministic), params, config, step, trainer)


def evaluate_policy(policy: Policy, episodes: int, deterministic: bool, seed: int = 0) -> np.ndarray:
    """Returns of ``episodes`` episodes run in parallel in one compiled program."""
    evaluate = jax.jit(make_evaluate(policy.trainer, episodes, deterministic))
    return np.asarray(evaluate(policy.params, jax.random.key(seed)))


def record_episode(policy: Policy, deterministic: bool, seed: int = 0, max_steps: int | None = None):
    """One episode as ``(observations [T+1, obs_dim], total return)``, compiled as one scan.

    The observations run from the first one to the one the last step reached, so an
    episode of T steps gives T + 1 frames.
    """
    env, act = policy.trainer.env, make_act(policy.trainer, deterministic)
    limit = max_steps or int(getattr(env.params, "max_steps_in_episode", 1000))

    @jax.jit
    def run(params, key):
        reset_key, key = jax.random.split(key)
        obs, env_state = env.reset(reset_key)

        def step(carry, key_t):
            obs, env_state, alive = carry
            act_key, env_key = jax.random.split(key_t)
            action = act(params, obs, act_key)
            next_obs, env_state, reward, terminated, truncated, final_obs = env.step(env_key, env_state, action)
            done = terminated | truncated
            return (next_obs, env_state, alive & ~done), (final_obs, reward * alive, alive)

        _, (final_obs, rewards, alive) = jax.lax.scan(
            step, (obs, env_state, jnp.ones((), bool)), jax.random.split(key, limit)
        )
        return obs, final_obs, rewards, alive

    first, reached, rewards, alive = jax.device_get(run(policy.params, jax.random.key(seed)))
    length = int(alive.sum())
    frames = np.concatenate([first[None], reached[:length]], axis=0)
    return frames, float(rewards.sum())
