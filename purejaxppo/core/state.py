"""The state a training run carries from one update to the next."""

from __future__ import annotations

from typing import Any

import jax
from flax import struct

from purejaxppo.core.losses import KLControllerState
from purejaxppo.core.normalize import RunningMeanStd


@struct.dataclass
class RunnerState:
    """Everything a run carries from one update to the next (and what a checkpoint holds).

    Per-environment fields have a leading axis of the environments this device steps.
    """

    params: Any
    opt_state: Any
    env_state: Any  # [N, ...] environment states
    obs: jax.Array  # [N, obs_dim] current raw observations
    key: jax.Array
    obs_rms: RunningMeanStd  # running observation statistics ([obs_dim])
    ret_rms: RunningMeanStd  # running statistics of the discounted return ([])
    disc_return: jax.Array  # [N] discounted return used for reward scaling
    episode_return: jax.Array  # [N] return of the running episode
    episode_length: jax.Array  # [N] length of the running episode
    kl: KLControllerState
    update_step: jax.Array  # [] updates done so far
