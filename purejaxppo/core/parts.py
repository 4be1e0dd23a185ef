"""The static pieces a training program is built from, made once per configuration
(:func:`purejaxppo.core.train.make_parts`) and closed over by every stage."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from purejaxppo.core.collectives import Collectives
from purejaxppo.core.config import PPOConfig
from purejaxppo.core.kind import PolicyKind
from purejaxppo.core.layout import Layout
from purejaxppo.core.tuning import Tuning
from purejaxppo.envs import EnvAdapter


class Parts(NamedTuple):
    """Closed over by the compiled program; never traced."""

    config: PPOConfig
    env: EnvAdapter
    policy: PolicyKind  # the stages of the policy kind (feed-forward or recurrent)
    network: Any  # ActorCritic or RecurrentActorCritic
    dist: Any  # Categorical, DiagGaussian or TanhGaussian
    comm: Collectives
    act: Callable  # the policy kind's act (see PolicyKind.make_act)
    vstep: Callable  # env.step over this device's environments, actions mapped per act.action_mapping
    action_mask: Callable  # env states [N, ...] -> their action masks [N, A], or None where the env has none
    loss: Callable  # apply_fn -> loss(params, minibatch, hparams, kl_coef) -> (loss, LossInfo)
    layout: Layout  # how the program is laid out on this backend, resolved into functions
    tuning: Tuning  # the layout's choices, as given
    optimizer: Callable  # hparams -> the optax transformation (the gradient clip chosen by the config)

    @property
    def num_local_envs(self) -> int:
        return self.config.num_envs // self.comm.num_shards
