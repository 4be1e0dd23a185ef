"""Training many agents at once: one compiled ``vmap(train)`` sharded over devices and hosts.

The agent axis is split over all devices of a ``jax.sharding.Mesh`` (one axis named
``"agents"``) and the results are global arrays sharded as ``P("agents")``; when the agent
count does not divide the device count, the last agent is repeated to pad and the copies
are dropped.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from purejaxppo.core.config import HParams
from purejaxppo.core.train import Trainer


class Compiler(Protocol):
    """What compiles a sweep's programs when given (:class:`purejaxppo.run.programs.Programs` is one)."""

    def compile(self, name: str, fn: Callable, args: Any, donate_argnums: tuple[int, ...] = ()) -> Callable: ...


def agent_mesh(devices: list | None = None) -> Mesh:
    """A one-axis mesh (``"agents"``) over ``devices`` (default: all devices of all processes)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), ("agents",))


def run_agents(trainer: Trainer, keys: jax.Array, hparams: HParams, mesh: Mesh | None = None,
               chunk_updates: int | None = None, on_chunk: Callable[[int], None] | None = None,
               programs: Compiler | None = None):
    """Train ``A`` agents (``keys [A]``, ``hparams [A]``) in one program, split over ``mesh``.

    ``jit(vmap(train))`` with the agent axis sharded as ``NamedSharding(mesh, P("agents"))``
    (padded to a multiple of the device count by repeating the last agent; the copies are
    dropped). Agents never communicate, so each device trains its own block. Each process
    provides only its own devices' blocks, so the same code runs across hosts.

    What is guaranteed: a sweep is deterministic for a given number of agents per device.
    XLA compiles a vmap of each width differently, so the same agent trained among a
    different number of agents per device (another device count) agrees at first to the
    last bits of float rounding, and RL amplifies such differences over an episode or two:
    later returns of an agent can differ by a few per cent while the statistics over seeds
    agree.

    With ``chunk_updates``, the agents are initialised by one program and trained by repeated
    calls of a second, a ``lax.scan`` of ``chunk_updates`` vmapped updates (the same updates
    as the fused program), and ``on_chunk(updates done)`` is called between chunks (a progress
    bar).

    With ``programs`` (:class:`~purejaxppo.run.programs.Programs` over a folder, whose description
    determines ``trainer``) on one device in one process, the programs are compiled through its
    saved programs (``sweep-init``, ``sweep-chunk{K}``, ``sweep-train``, keyed also by the agent
    count): a later launch of the same sweep loads them instead of tracing them, and runs the
    same programs.

    Returns ``(final states, metrics)``; states are global arrays with the agent axis first
    (padding included), metrics are host NumPy arrays of the ``A`` agents.
    """
    mesh = agent_mesh() if mesh is None else mesh
    n_agents, n_dev = keys.shape[0], mesh.devices.size
    args, jit_kw = _agent_args(keys, hparams, mesh)
    saved = programs if programs is not None and n_dev == 1 and jax.process_count() == 1 else None

    def build(name, fn, call_args, donate_argnums=()):
        if saved is None:
            return jax.jit(fn, donate_argnums=donate_argnums, **jit_kw)
        return saved.compile(name, fn, call_args, donate_argnums)

    if chunk_updates is None:
        def train(key_data, hparams):
            return jax.vmap(trainer.train)(jax.random.wrap_key_data(key_data), hparams)

        states, metrics = build("sweep-train", train, args)(*args)
        metrics = _host(metrics)
    else:
        states, metrics = _train_in_chunks(trainer, args, build, chunk_updates, on_chunk)
    return states, jax.tree_util.tree_map(lambda x: np.asarray(x)[:n_agents], metrics)


def _agent_args(keys: jax.Array, hparams: HParams, mesh: Mesh):
    """``((key data, hparams), jit options)``: the agents padded to a multiple of the device count
    by repeating the last one, and placed as ``P("agents")`` over ``mesh`` when it has several devices."""
    n_agents, n_dev = keys.shape[0], mesh.devices.size
    padded = -(-n_agents // n_dev) * n_dev
    key_data = np.asarray(jax.random.key_data(keys))
    host_hparams = jax.tree_util.tree_map(np.asarray, hparams)
    if padded != n_agents:  # pad by repeating the last agent; the copies are dropped by run_agents
        pad = lambda x: np.concatenate([x, np.repeat(x[-1:], padded - n_agents, axis=0)])  # noqa: E731
        key_data, host_hparams = pad(key_data), jax.tree_util.tree_map(pad, host_hparams)
    if n_dev == 1:
        return (key_data, host_hparams), {}
    sharding = NamedSharding(mesh, PartitionSpec("agents"))
    put = lambda x: jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])  # noqa: E731
    return (put(key_data), jax.tree_util.tree_map(put, host_hparams)), {"out_shardings": sharding}


def _train_in_chunks(trainer: Trainer, args, build: Callable, chunk_updates: int,
                     on_chunk: Callable[[int], None] | None):
    """``(states, metrics)``: the agents initialised by one program, then trained by repeated calls
    of a ``lax.scan`` of ``chunk_updates`` vmapped updates, ``on_chunk(updates done)`` after each."""

    def init(key_data, hparams):
        return jax.vmap(trainer.init)(jax.random.wrap_key_data(key_data), hparams)

    def chunk(states, hparams, length):
        states, metrics = jax.lax.scan(lambda s, _: jax.vmap(trainer.update)(s, hparams), states, None, length=length)
        # the scan stacks updates first ([length, agents]); agents first, as the fused program's vmap gives
        return states, jax.tree_util.tree_map(lambda x: jnp.moveaxis(x, 0, 1), metrics)

    states = build("sweep-init", init, args)(*args)
    n_updates, done, pieces, compiled = trainer.config.num_updates, 0, [], {}
    while done < n_updates:
        k = min(chunk_updates, n_updates - done)
        if k not in compiled:
            compiled[k] = build(f"sweep-chunk{k}", functools.partial(chunk, length=k), (states, args[1]), (0,))
        states, m = compiled[k](states, args[1])
        pieces.append(_host(m))
        done += k
        if on_chunk is not None:
            on_chunk(done)
    return states, {name: np.concatenate([p[name] for p in pieces], axis=1) for name in pieces[0]}


def _host(metrics):
    """The metrics of every agent on this host (gathered from the other processes)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        metrics = multihost_utils.process_allgather(metrics, tiled=True)  # every process gets every agent
    return jax.device_get(metrics)
