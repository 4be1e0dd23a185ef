"""Acting: observation normalisation, the policy, and a sampled or most likely action.

One :func:`make_act` serves training, evaluation and policies loaded from checkpoints.

Action clipping, decided once: ``act`` returns the action as drawn from the policy (its
log-probability is of that action, so the ratio of the PPO loss is exact). Where
``clip_actions`` is on (the default), continuous actions are clipped to the action space's
bounds only on their way into the environment, in training and evaluation alike, and a loaded
policy's ``act`` returns the clipped action, the one the environment would receive.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from purejaxppo.core.collectives import LOCAL, Collectives
from purejaxppo.core.config import PPOConfig
from purejaxppo.core.distributions import mask_logits
from purejaxppo.core.networks import ActorCritic
from purejaxppo.core.normalize import RunningMeanStd, rms_normalize

Act = Callable[..., tuple[jax.Array, jax.Array]]


def action_mapping(config: PPOConfig) -> str:
    """How a continuous action reaches the environment (``EnvAdapter.env_action``): squashed by
    tanh (``action_dist`` tanh), clipped (``clip_actions``), or unchanged."""
    if config.action_dist == "tanh":
        return "tanh"
    return "clip" if config.clip_actions else "none"


def observe(config: PPOConfig, obs_rms: RunningMeanStd, obs: jax.Array) -> jax.Array:
    """What the networks see: ``obs`` normalised by the run's statistics when ``normalize_obs`` is on."""
    return rms_normalize(obs_rms, obs, config.clip_obs) if config.normalize_obs else obs


def make_act(config: PPOConfig, network: ActorCritic, dist: Any, comm: Collectives = LOCAL) -> Act:
    """``act(params, obs_rms, obs [..., obs_dim], key, deterministic=False, mask=None) -> (action, log_prob)``.

    ``deterministic`` takes the mode (argmax, or the Gaussian mean) instead of sampling; ``mask``
    (the environment's action mask, shaped as the logits) rules actions out. With
    data parallelism (``comm``) the noise is drawn for all environments, as on one device, and
    each device keeps its share.
    """

    def act(params: Any, obs_rms: RunningMeanStd, obs: jax.Array, key: jax.Array, deterministic: bool = False,
            mask: jax.Array | None = None):
        pi = mask_logits(network.apply(params, observe(config, obs_rms, obs), method=ActorCritic.policy), mask)
        if deterministic:
            action = dist.mode(pi)
        else:
            action = comm.own(dist.sample(key, jax.tree_util.tree_map(comm.gather, pi)))
        return action, dist.log_prob(pi, action)

    return act
