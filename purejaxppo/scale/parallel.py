"""One agent, its environments split across devices: data-parallel PPO.

``make_data_parallel_train(config, mesh)`` returns ``train(key, hparams)`` with the same
contract as :func:`purejaxppo.make_train`, for a mesh with one axis named ``"envs"``. It is
a ``shard_map`` of the trainer's per-device body, ``make_trainer(config, MeshCollectives("envs", D))``,
the one-device program with these collectives injected:

- each of the ``D`` devices steps ``num_envs / D`` environments with the replicated policy;
  the action noise and the environment keys are the one-device run's, cut into shares;
- the trajectory is gathered (``all_gather``) so that every device holds the whole batch,
  shuffles it with the same key, and normalises each minibatch's advantages over the whole
  minibatch;
- each device takes the gradient of its ``minibatch_size / D`` rows of every minibatch and
  the gradients are averaged with ``lax.pmean``; the optimiser step is then the same on
  every device, so parameters stay replicated.

The result equals the one-device run up to float rounding (the gradient sums are split
differently). On one device it *is* the one-device program. The final state's
per-environment fields are global arrays sharded over the ``"envs"`` axis; everything else
is replicated.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from purejaxppo.core.collectives import Collectives
from purejaxppo.core.config import HParams, PPOConfig
from purejaxppo.core.state import RunnerState
from purejaxppo.core.train import Trainer, make_trainer
from purejaxppo.errors import ConfigError

AXIS = "envs"


class MeshCollectives(Collectives):
    """The collectives over a named mapped axis of ``num_shards`` devices (``shard_map``, or
    ``vmap`` with an ``axis_name``, which runs the same program on one device)."""

    def __init__(self, axis_name: str, num_shards: int):
        self.axis_name = axis_name
        self.num_shards = num_shards

    def own(self, x: jax.Array, axis: int = 0) -> jax.Array:
        assert x.shape[axis] % self.num_shards == 0, f"own: axis {axis} of {x.shape} does not split into {self.num_shards}"
        size = x.shape[axis] // self.num_shards
        return jax.lax.dynamic_slice_in_dim(x, jax.lax.axis_index(self.axis_name) * size, size, axis)

    def gather(self, x: jax.Array, axis: int = 0) -> jax.Array:
        return jax.lax.all_gather(x, self.axis_name, axis=axis, tiled=True)

    def sum(self, x):
        return jax.lax.psum(x, self.axis_name)

    def mean(self, x):
        return jax.lax.pmean(x, self.axis_name)


def check_shards(config: PPOConfig, num_shards: int) -> None:
    """A data-parallel run over ``num_shards`` devices needs equal shares of envs and minibatches."""
    if config.trajectory_minibatches and num_shards > 1:
        raise ConfigError(f"trajectory_minibatches: got True with data parallelism over {num_shards} devices; "
                          "accepted: false with data parallelism, or one device")
    if config.num_envs % num_shards:
        raise ConfigError(
            f"num_envs: {config.num_envs} environments cannot be split evenly over {num_shards} devices; "
            f"accepted: a multiple of {num_shards}"
        )
    if config.policy == "gru" and (config.num_sequences // config.num_minibatches) % num_shards:
        raise ConfigError(
            f"num_minibatches: minibatches of {config.num_sequences // config.num_minibatches} sequences cannot be "
            f"split evenly over {num_shards} devices; accepted: num_envs * num_steps / seq_len / num_minibatches a "
            f"multiple of {num_shards}"
        )
    if (config.num_envs // num_shards) % config.reset_ratio:
        raise ConfigError(
            f"reset_ratio: {config.reset_ratio} does not divide the {config.num_envs // num_shards} environments of "
            f"each of {num_shards} devices; accepted: a divisor of num_envs / {num_shards}"
        )
    if config.minibatch_size % num_shards:
        raise ConfigError(
            f"num_minibatches: minibatches of {config.minibatch_size} samples cannot be split evenly over "
            f"{num_shards} devices; accepted: num_envs * num_steps / num_minibatches a multiple of {num_shards}"
        )


def sharded_trainer(config: PPOConfig, num_shards: int, axis_name: str = AXIS) -> Trainer:
    """The per-device body of a data-parallel run over ``num_shards`` shards of ``axis_name``."""
    check_shards(config, num_shards)
    return make_trainer(config, MeshCollectives(axis_name, num_shards))


def env_mesh(devices: list | None = None) -> Mesh:
    """A one-axis mesh (``"envs"``) over ``devices`` (default: all devices)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (AXIS,))


def state_specs() -> RunnerState:
    """Where each field of the training state lives: per-environment fields are split."""
    split, same = PartitionSpec(AXIS), PartitionSpec()
    return RunnerState(
        params=same,
        opt_state=same,
        env_state=split,
        obs=split,
        key=same,
        obs_rms=same,
        ret_rms=same,
        disc_return=split,
        episode_return=split,
        episode_length=split,
        kl=same,
        update_step=same,
        hidden=split,
        starts=split,
    )


def data_parallel_trainer(config: PPOConfig, mesh: Mesh | None = None) -> Trainer:
    """The :class:`~purejaxppo.core.train.Trainer` of a data-parallel run over ``mesh``.

    Its ``init``, ``update`` and ``train`` have the one-device signatures and work on
    global arrays: per-environment state fields are sharded over the ``"envs"`` axis (see
    :func:`state_specs`), everything else is replicated. On one device this is the ordinary
    :func:`~purejaxppo.core.train.make_trainer`.
    """
    mesh = env_mesh() if mesh is None else mesh
    if mesh.axis_names != (AXIS,):
        raise ConfigError(f"mesh: axes {mesh.axis_names}; accepted: one axis named {AXIS!r} (see env_mesh)")
    n = mesh.devices.size
    if n == 1:
        return make_trainer(config)
    body = sharded_trainer(config, n)
    specs, same = state_specs(), PartitionSpec()
    default_hparams = HParams.from_config(config)

    # Replicated outputs (parameters, metrics) are equal on every device by construction
    # (they come out of psum/pmean/all_gather), which shard_map cannot prove: check_vma=False.
    def shard(f, in_specs, out_specs):
        return jax.shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)

    init = shard(body.init, (same, same), specs)
    update = shard(body.update, (specs, same), (specs, same))
    whole = shard(body.train, (same, same), (specs, same))  # the whole run in one shard_map

    def train(key: jax.Array, hparams: HParams | None = None):
        return whole(key, default_hparams if hparams is None else hparams)

    return body._replace(init=init, update=update, train=train, mesh=mesh)


def state_shardings(mesh: Mesh, state: RunnerState) -> RunnerState:
    """``NamedSharding`` of every leaf of ``state`` (to place a restored state on ``mesh``)."""
    return jax.tree_util.tree_map(
        lambda spec, sub: jax.tree_util.tree_map(lambda _: NamedSharding(mesh, spec), sub),
        state_specs(),
        state,
        is_leaf=lambda x: isinstance(x, PartitionSpec),
    )


def make_data_parallel_train(config: PPOConfig, mesh: Mesh | None = None) -> Callable:
    """``train(key, hparams=None) -> (final_state, metrics)`` over the devices of ``mesh``.

    Pure and jittable, like :func:`purejaxppo.make_train`. ``num_envs`` and the minibatch
    size must divide by the number of devices (one-line :class:`ConfigError` otherwise).

    Example:
        >>> import jax
        >>> from purejaxppo import PPOConfig
        >>> from purejaxppo import make_data_parallel_train
        >>> train = jax.jit(make_data_parallel_train(PPOConfig(total_timesteps=4096)))
        >>> state, metrics = train(jax.random.key(0))
    """
    return data_parallel_trainer(config, mesh).train
