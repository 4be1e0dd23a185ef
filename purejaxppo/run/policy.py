"""Trained policies from run folders: ``load_policy(run_dir)``."""

from __future__ import annotations

import os
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from purejaxppo.core.act import action_mapping
from purejaxppo.core.config import PPOConfig
from purejaxppo.core.normalize import RunningMeanStd
from purejaxppo.core.train import Trainer, make_trainer
from purejaxppo.errors import CheckpointError, ConfigError
from purejaxppo.run import layout
from purejaxppo.run.checkpoints import Checkpointer
from purejaxppo.run.compiled import init_shapes, make_programs


@struct.dataclass
class PolicyParams:
    """What acting needs: network parameters and the observation statistics of the run."""

    params: Any
    obs_rms: RunningMeanStd


class Policy(NamedTuple):
    """A policy loaded from a checkpoint.

    ``act(params, obs, key) -> action`` is pure and jittable; ``obs`` is one flat observation
    ``[obs_dim]`` or a batch ``[B, obs_dim]`` (or the environment's own observation shape, with
    an optional batch axis; another shape is a one-line :class:`ConfigError`). The action is the
    one the environment receives in training (clipped to the action bounds when the run's
    ``clip_actions`` is on, squashed into them with ``action_dist`` tanh).
    """

    act: Callable[[PolicyParams, jax.Array, jax.Array], jax.Array]
    params: PolicyParams
    config: PPOConfig
    step: int
    trainer: Trainer


def load_state(run_dir: str, step: int | None = None, log: Callable[[str], None] = print,
               program_cache: str | None = None, agent: int | None = None):
    """``(config, trainer, step, RunnerState)`` from the latest (or ``step``) checkpoint of a run,
    or, with ``agent``, that agent's final state in a sweep's folder
    (:func:`~purejaxppo.run.sweep_agents.load_agent`; its config holds the agent's hyperparameters).

    ``program_cache``: a folder of saved programs (:mod:`purejaxppo.run.programs`); where the
    run's training saved its initial state's program there, its shapes are read from it
    instead of tracing ``init``."""
    if agent is not None:
        if step is not None:
            raise ConfigError(f"step: got {step!r} with an agent; accepted: None (a sweep keeps its agents' final "
                              "states only)")
        from purejaxppo.run.sweep_agents import load_agent

        return load_agent(run_dir, agent, program_cache)
    config = layout.read_config(run_dir)
    ckpt_dir = os.path.join(run_dir, layout.CHECKPOINTS)
    if not os.path.isdir(ckpt_dir):
        raise CheckpointError(f"{run_dir} has no checkpoints (it was trained with --checkpoint-every 0)")
    trainer = make_trainer(config)
    like = init_shapes(trainer, make_programs(trainer, program_cache))
    checkpointer = Checkpointer(ckpt_dir, read_only=True)  # a reader: no lock, nothing written
    try:
        step, state, _, _ = checkpointer.restore(like, step=step, log=log)
    finally:
        checkpointer.close()
    return config, trainer, step, state


def policy_act(trainer: Trainer, deterministic: bool = False):
    """``act(PolicyParams, obs, key) -> action`` from the trainer's ``act``, as the environment receives it."""
    env, how = trainer.env, action_mapping(trainer.config)
    if trainer.policy.stateful:
        def stateful(params, obs, key):
            raise ConfigError("policy.act: a recurrent (policy gru) agent's action depends on its hidden state; "
                              "accepted: trainer.act(params, obs_rms, h, obs, start, key, deterministic), or "
                              "purejaxppo eval")

        return stateful

    dim, shape = env.obs_dim, tuple(env.obs_shape)

    def act(params: PolicyParams, obs: jax.Array, key: jax.Array) -> jax.Array:
        obs = jnp.asarray(obs, jnp.float32)
        flat = obs.ndim in (1, 2) and obs.shape[-1] == dim
        if (not flat and len(shape) > 1 and obs.shape[-len(shape):] == shape
                and obs.ndim in (len(shape), len(shape) + 1)):
            obs = obs.reshape(obs.shape[: obs.ndim - len(shape)] + (dim,))  # the environment's own shape, flattened
        if obs.ndim not in (1, 2) or obs.shape[-1] != dim:
            own = f", or its shape {list(shape)} with an optional batch axis" if len(shape) > 1 else ""
            raise ConfigError(f"policy.act: an observation of shape {tuple(obs.shape)}; accepted: [{dim}] or "
                              f"[B, {dim}] (the flat observation of {trainer.config.env}{own})")
        action, _ = trainer.act(params.params, params.obs_rms, obs, key, deterministic)
        return env.env_action(action, how)

    return act


def load_policy(run_dir: str, step: int | None = None, deterministic: bool = False,
                program_cache: str | None = None, agent: int | None = None) -> Policy:
    """Load a run's policy from its latest (or ``step``) checkpoint, or agent ``agent`` of a sweep
    (the ``agent`` column of its ``results.csv``) from the sweep's folder.

    ``program_cache``: a folder of saved programs (the command line's is ``programs`` in the
    compilation cache); where training saved its initial state's program there, loading does
    not trace it.

    Example:
        >>> policy = load_policy("runs/cartpole")  # written by `purejaxppo train --out runs/cartpole`  # doctest: +SKIP
        >>> obs = jnp.zeros(4)                     # one CartPole observation [obs_dim], or a batch [B, obs_dim]
        >>> action = jax.jit(policy.act)(policy.params, obs, jax.random.key(0))  # doctest: +SKIP
    """
    config, trainer, step, state = load_state(run_dir, step, program_cache=program_cache, agent=agent)
    params = PolicyParams(params=state.params, obs_rms=state.obs_rms)
    return Policy(policy_act(trainer, deterministic), params, config, step, trainer)
