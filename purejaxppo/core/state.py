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
    hidden: Any = None  # [N, H] recurrent policies: the hidden state before the next step (None otherwise)
    starts: Any = None  # [N] recurrent policies: the current observation begins an episode


def finite_state(state: RunnerState) -> jax.Array:
    """Whether every float in what training learns (parameters, optimiser state, normaliser
    statistics, KL coefficient) is finite: a scalar bool, jittable."""
    learned = (state.params, state.opt_state, state.obs_rms, state.ret_rms, state.kl)
    leaves = [x for x in jax.tree_util.tree_leaves(learned) if jax.numpy.issubdtype(x.dtype, jax.numpy.floating)]
    return jax.numpy.all(jax.numpy.stack([jax.numpy.isfinite(x).all() for x in leaves]))
