"""Training many agents at once: one compiled ``vmap(train)`` sharded over devices and hosts.

The agent axis is split over all devices of a ``jax.sharding.Mesh`` (one axis named
``"agents"``) and the results are global arrays sharded as ``P("agents")``; when the agent
count does not divide the device count, the last agent is repeated to pad and the copies
are dropped.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

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


class Progress(NamedTuple):
    """Where a chunked training of many agents stands, between two chunks: enough to continue it.

    ``carry``: what the chunk program carries (the agents' states, padding included; a PBT
    population also its :class:`~purejaxppo.scale.pbt.PBTCarry`). ``outputs``: the host arrays
    the chunks returned so far, name -> ``[A', done, ...]`` (padding included).
    """

    carry: Any
    done: int  # updates done
    outputs: dict[str, np.ndarray]


def run_chunks(carry: Any, outputs: dict[str, np.ndarray] | None, done: int, n_updates: int, step: int,
               compile_chunk: Callable[[int, Any], Callable], on_chunk: Callable[[int], None] | None = None,
               on_progress: Callable[[Progress], None] | None = None) -> Progress:
    """Call chunk programs ``compile_chunk(k, carry)`` of ``k <= step`` updates (``carry -> (carry,
    outputs)``) from update ``done`` to ``n_updates``, after each calling ``on_chunk(done)`` and
    ``on_progress(Progress)`` (a checkpoint); the chunks' outputs are gathered to the host and
    joined along the update axis (axis 1) to the ones given."""
    pieces, compiled = ([] if outputs is None else [outputs]), {}
    while done < n_updates:
        k = min(step, n_updates - done)
        if k not in compiled:
            compiled[k] = compile_chunk(k, carry)
        carry, out = compiled[k](carry)
        pieces.append(_host(out))
        done += k
        if on_chunk is not None:
            on_chunk(done)
        if on_progress is not None:
            pieces = [_joined(pieces)]
            on_progress(Progress(carry, done, pieces[0]))
    return Progress(carry, done, _joined(pieces) if pieces else {})


def _joined(pieces: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if len(pieces) == 1:
        return pieces[0]
    return {name: np.concatenate([p[name] for p in pieces], axis=1) for name in pieces[0]}


def run_agents(trainer: Trainer, keys: jax.Array, hparams: HParams, mesh: Mesh | None = None,
               chunk_updates: int | None = None, on_chunk: Callable[[int], None] | None = None,
               programs: Compiler | None = None, start: Progress | None = None,
               on_progress: Callable[[Progress], None] | None = None):
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

    ``on_progress(Progress)`` is called after each chunk (a checkpoint of the whole population),
    and ``start`` (a :class:`Progress` such a call saw) continues from there instead of from
    the initial states: the same chunk programs give the same numbers as an uninterrupted run.

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

    if chunk_updates is None and start is None and on_progress is None:
        def train(key_data, hparams):
            return jax.vmap(trainer.train)(jax.random.wrap_key_data(key_data), hparams)

        states, metrics = build("sweep-train", train, args)(*args)
        metrics = _host(metrics)
    else:
        step = trainer.config.num_updates if chunk_updates is None else chunk_updates
        states, metrics = _train_in_chunks(trainer, args, build, step, on_chunk, start, on_progress)
    return states, jax.tree_util.tree_map(lambda x: np.asarray(x)[:n_agents], metrics)


def initial_carry(trainer: Trainer, keys: jax.Array, hparams: HParams) -> Any:
    """The shapes and dtypes of the agents' initial states (``keys [A]``, ``hparams [A]``, one
    device): what a saved :class:`Progress` of :func:`run_agents` is restored into."""
    args, _ = _agent_args(keys, hparams, agent_mesh(jax.local_devices()[:1]))
    return jax.eval_shape(lambda k, h: jax.vmap(trainer.init)(jax.random.wrap_key_data(k), h), *args)


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
                     on_chunk: Callable[[int], None] | None, start: Progress | None = None,
                     on_progress: Callable[[Progress], None] | None = None):
    """``(states, metrics)``: the agents initialised by one program (or taken from ``start``), then
    trained by repeated calls of a ``lax.scan`` of ``chunk_updates`` vmapped updates
    (:func:`run_chunks`)."""

    def init(key_data, hparams):
        return jax.vmap(trainer.init)(jax.random.wrap_key_data(key_data), hparams)

    def chunk(states, hparams, length):
        states, metrics = jax.lax.scan(lambda s, _: jax.vmap(trainer.update)(s, hparams), states, None, length=length)
        # the scan stacks updates first ([length, agents]); agents first, as the fused program's vmap gives
        return states, jax.tree_util.tree_map(lambda x: jnp.moveaxis(x, 0, 1), metrics)

    def compile_chunk(k, states):
        program = build(f"sweep-chunk{k}", functools.partial(chunk, length=k), (states, args[1]), (0,))
        return lambda states: program(states, args[1])

    if start is None:
        states, outputs, done = build("sweep-init", init, args)(*args), None, 0
    else:
        states, outputs, done = start.carry, start.outputs, start.done
    end = run_chunks(states, outputs, done, trainer.config.num_updates, chunk_updates, compile_chunk, on_chunk,
                     on_progress)
    return end.carry, end.outputs


def agents_on_host(states: Any, num_agents: int) -> Any:
    """The states of the first ``num_agents`` agents (the padding dropped), gathered from every
    process when there are several, so that any agent can be taken from them."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        is_key = lambda x: jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)  # noqa: E731
        data = jax.tree_util.tree_map(lambda x: jax.random.key_data(x) if is_key(x) else x, states)
        data = multihost_utils.process_allgather(data, tiled=True)
        states = jax.tree_util.tree_map(lambda d, x: jax.random.wrap_key_data(d) if is_key(x) else d, data, states)
    return jax.tree_util.tree_map(lambda x: x[:num_agents], states)


def _host(metrics):
    """The metrics of every agent on this host (gathered from the other processes)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        metrics = multihost_utils.process_allgather(metrics, tiled=True)  # every process gets every agent
    return jax.device_get(metrics)
