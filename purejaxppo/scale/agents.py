"""Training many agents at once: one compiled ``vmap(train)`` per device, over hosts too.

The agent axis is split over all devices of a ``jax.sharding.Mesh`` (one axis named
``"agents"``): each device runs the one-device program on its block and the results are
global arrays sharded as ``P("agents")``; when the agent count does not divide the device
count, the last agent is repeated to pad and the copies are dropped.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from purejaxppo.core.config import HParams
from purejaxppo.core.train import Trainer


def agent_mesh(devices: list | None = None) -> Mesh:
    """A one-axis mesh (``"agents"``) over ``devices`` (default: all devices of all processes)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), ("agents",))


def run_agents(trainer: Trainer, keys: jax.Array, hparams: HParams, mesh: Mesh | None = None):
    """Train ``A`` agents (``keys [A]``, ``hparams [A]``) in one program per device, over ``mesh``.

    The agent axis is split into equal blocks, one per device of ``mesh`` (padded by
    repeating the last agent; the copies are dropped). Every device runs the *same
    one-device program* (``jit(vmap(train))`` of a block) on its own agents, and the blocks
    are assembled into global arrays sharded as ``NamedSharding(mesh, P("agents"))``.
    Agents never communicate, so no partitioned program is needed; and an SPMD-partitioned
    program is optimised differently by XLA (it rounds some sums differently, about 1e-7
    relative), whereas this way every agent's numbers are bit-identical to a one-device
    sweep. Each process feeds only its own devices, so the same code runs across hosts.

    Returns ``(final states, metrics)``; states are global arrays with the agent axis first
    (padding included), metrics are host NumPy arrays of the ``A`` agents.
    """
    mesh = agent_mesh() if mesh is None else mesh
    n_agents = keys.shape[0]
    n_dev = mesh.devices.size
    padded = -(-n_agents // n_dev) * n_dev
    if padded != n_agents:  # pad by repeating the last agent; the copies are dropped below
        pad = lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], padded - n_agents, axis=0)])  # noqa: E731
        keys, hparams = pad(keys), jax.tree_util.tree_map(pad, hparams)
    train_block = jax.jit(jax.vmap(trainer.train))
    if n_dev == 1:
        states, metrics = train_block(keys, hparams)
    else:
        states, metrics = _train_blocks(train_block, mesh, keys, hparams)
    return states, jax.tree_util.tree_map(lambda x: np.asarray(x)[:n_agents], jax.device_get(metrics))


def _train_blocks(train_block, mesh: Mesh, keys: jax.Array, hparams: HParams):
    """Run ``train_block`` on every device of ``mesh`` with its block of the (padded) agents."""
    devices = list(mesh.devices.flat)
    padded = keys.shape[0]
    # The agent list is computed the same way in every process, so each one can cut out
    # the blocks of its own (addressable) devices from the host values.
    per = padded // len(devices)
    key_data = np.asarray(jax.random.key_data(keys))
    host_hparams = jax.tree_util.tree_map(np.asarray, hparams)
    local = [(i, d) for i, d in enumerate(devices) if d.process_index == jax.process_index()]

    def block_args(i, device):
        cut = lambda x: jax.device_put(x[i * per:(i + 1) * per], device)  # noqa: E731
        return jax.random.wrap_key_data(cut(key_data)), jax.tree_util.tree_map(cut, host_hparams)

    args = [block_args(i, d) for i, d in local]
    # One executable per device (the program is the same; XLA binds an executable to its
    # device). The first is compiled alone, so that where the persistent compilation cache
    # ignores the device (GPUs) the others are loaded from it; the rest compile in parallel
    # threads. Calls dispatch asynchronously, so the devices train at the same time.
    from concurrent.futures import ThreadPoolExecutor

    compiled = [train_block.lower(*args[0]).compile()]
    with ThreadPoolExecutor(max_workers=max(1, len(local) - 1)) as pool:
        compiled += list(pool.map(lambda a: train_block.lower(*a).compile(), args[1:]))
    outs = [c(*a) for c, a in zip(compiled, args)]

    sharding = NamedSharding(mesh, PartitionSpec("agents"))

    def to_global(*blocks):
        return jax.make_array_from_single_device_arrays((padded,) + blocks[0].shape[1:], sharding, list(blocks))

    states, metrics = jax.tree_util.tree_map(to_global, *outs)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        metrics = multihost_utils.process_allgather(metrics, tiled=True)  # every process gets every agent
    return states, metrics
