"""The static pieces a training program is built from, made once per configuration."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from purejaxppo.core.act import Act, action_mapping, make_act
from purejaxppo.core.collectives import LOCAL, Collectives
from purejaxppo.core.config import PPOConfig, validate_for_env
from purejaxppo.core.distributions import distribution
from purejaxppo.core.networks import ActorCritic, make_network
from purejaxppo.core.tuning import Tuning, tuning_for
from purejaxppo.envs import EnvAdapter, make_env


class Parts(NamedTuple):
    """Closed over by the compiled program; never traced."""

    config: PPOConfig
    env: EnvAdapter
    network: ActorCritic
    dist: Any  # Categorical or DiagGaussian
    comm: Collectives
    act: Act
    vstep: Callable  # env.step over this device's environments, actions mapped per act.action_mapping
    tuning: Tuning  # how the program is laid out on this backend (same algorithm)

    @property
    def num_local_envs(self) -> int:
        return self.config.num_envs // self.comm.num_shards


def make_parts(config: PPOConfig, comm: Collectives = LOCAL, tuning: Tuning | None = None) -> Parts:
    """Build the environment (checking the settings that depend on it), network and acting function.

    ``tuning`` defaults to the choices for JAX's default backend (:mod:`purejaxppo.core.tuning`).
    """
    env, _ = make_env(config.env)
    validate_for_env(config, env)
    tuning = tuning_for() if tuning is None else tuning
    if config.policy == "gru":
        from purejaxppo.core.recurrent import make_recurrent_network

        network = make_recurrent_network(config, env)
    else:
        network = make_network(config, env, tuning.weight_grad)
    dist = distribution(env.action_kind == "continuous", squash=config.action_dist == "tanh")
    how = action_mapping(config)
    vstep = jax.vmap(lambda k, s, a: env.step(k, s, a, how))
    return Parts(config, env, network, dist, comm, make_act(config, network, dist, comm), vstep, tuning)
