"""Population-based training (Jaderberg et al., 2017) inside the sweep's compiled program.

The sweep's agents are the population (or ``num_populations`` equal, contiguous blocks of them,
each its own population). Every ``interval`` updates, inside the chunk program::

    fitness    mean return of each agent's episodes that ended in the interval
               (an agent none of whose episodes ended keeps its last fitness; a diverged one,
               with a non-finite learned state or return, has fitness -inf)
    select     truncation: each agent ranked in the bottom ``fraction`` of its population (and
               every diverged one) copies the learned state of an agent drawn uniformly from the
               top ``fraction``, if that agent is strictly fitter: parameters, optimiser state
               (its step count included), normalisation statistics, KL coefficient and hyperparameters
    explore    each copied agent's explored hyperparameters: resampled from the search space with
               probability ``resample_prob``, else multiplied by one of ``factors`` (a ``choice``
               field moves to a neighbouring value) and clipped to the space's range

Each agent keeps its own environments, episode trackers, recurrent memory and PRNG key: a copy
shares its parent's policy, not its parent's future. Selection gathers across the agent axis,
so a population sharded over devices is gathered by XLA where needed; the update itself stays
a per-agent ``vmap``. With ``fraction = 0`` nothing is selected and the run is the plain sweep's,
bit for bit.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from purejaxppo.core.config import HParams, check_integer
from purejaxppo.core.state import finite_state
from purejaxppo.core.train import Trainer
from purejaxppo.errors import ConfigError
from purejaxppo.scale.agents import Compiler, Progress, _agent_args, agent_mesh, run_chunks
from purejaxppo.scale.plan import Distribution, check_distribution

Space = dict[str, Distribution]  # the explored fields and where their values may go


class PBTConfig(NamedTuple):
    """How the population is selected and explored (all static: they shape the program)."""

    interval: int = 10  # updates between generations
    fraction: float = 0.25  # bottom fraction replaced by copies of the top fraction; 0 turns selection off
    resample_prob: float = 0.25  # probability that a copied agent's field is drawn afresh
    factors: tuple[float, float] = (0.8, 1.25)  # perturbation factors, one drawn per field
    num_populations: int = 1  # independent populations: equal contiguous blocks of the agents


class PBTCarry(NamedTuple):
    """What PBT carries beside the agents' states across updates and chunks."""

    key: jax.Array  # PRNG key of selection and exploration
    hparams: HParams  # [A] each agent's current hyperparameters
    return_sum: jax.Array  # [A] sum of the returns of episodes ended in the interval
    episodes: jax.Array  # [A] episodes ended in the interval
    fitness: jax.Array  # [A] last fitness (-inf before the first)


class Generation(NamedTuple):
    """One update's PBT record (only rows with ``selected`` are generations)."""

    selected: jax.Array  # [] a generation happened after this update
    parent: jax.Array  # [A] int32 whose state each agent holds after it (itself where not replaced)
    fitness: jax.Array  # [A] fitness it was ranked by
    diverged: jax.Array  # [A] the agent's state or return was not finite
    hparams: HParams  # [A] every agent's hyperparameters after it


class PBTRecord(NamedTuple):
    """The population's history, host NumPy arrays of the ``A`` agents over ``G`` generations."""

    updates: np.ndarray  # [G] the update after which each generation was selected
    parent: np.ndarray  # [G, A] lineage: the agent each one copied (itself where not replaced)
    fitness: np.ndarray  # [G, A]
    diverged: np.ndarray  # [G, A]
    hparams: dict[str, np.ndarray]  # explored field -> [G + 1, A]: the initial values, then after each generation


def check_pbt(pbt: PBTConfig, space: Space, num_agents: int) -> None:
    """Check the PBT settings in plain Python; one sentence naming the setting on failure."""
    check_integer("pbt interval", pbt.interval, 1)
    if not (isinstance(pbt.fraction, (int, float)) and 0 <= pbt.fraction <= 0.5):
        raise ConfigError(f"pbt fraction: got {pbt.fraction!r}; accepted: a number in [0, 0.5]")
    if not (isinstance(pbt.resample_prob, (int, float)) and 0 <= pbt.resample_prob <= 1):
        raise ConfigError(f"pbt resample_prob: got {pbt.resample_prob!r}; accepted: a number in [0, 1]")
    if len(pbt.factors) != 2 or not all(isinstance(f, (int, float)) and f > 0 for f in pbt.factors):
        raise ConfigError(f"pbt factors: got {pbt.factors!r}; accepted: two positive numbers, e.g. (0.8, 1.25)")
    check_integer("pbt num_populations", pbt.num_populations, 1)
    if num_agents % pbt.num_populations:
        raise ConfigError(f"pbt num_populations: {pbt.num_populations} does not divide the {num_agents} agents; "
                          "accepted: a divisor of the agent count")
    size = num_agents // pbt.num_populations
    if pbt.fraction and int(pbt.fraction * size) < 1:
        raise ConfigError(f"pbt fraction: {pbt.fraction} of a population of {size} selects no agent; accepted: a "
                          f"fraction >= {1 / size:.3g}, or more agents per population")
    if pbt.fraction and not space:
        raise ConfigError("pbt: nothing to explore; accepted: a search space (--sample FIELD=DIST, or --grid)")
    for field, dist in space.items():
        check_distribution(field, dist)


def space_of(grid: dict[str, list[float]], samples: Space) -> Space:
    """The explored fields: the random search's distributions, and each grid field as a ``choice``."""
    return {**{f: Distribution("choice", tuple(sorted(v))) for f, v in grid.items()}, **samples}


# ---- the pure pieces: unbatched over one population ([P] agents) --------------------------------


def truncation_parents(key: jax.Array, fitness: jax.Array, fraction: float) -> jax.Array:
    """``[P]`` int32: the agent whose state each agent takes. The bottom ``floor(fraction P)`` by
    fitness, and every agent of fitness -inf, draw a parent uniformly from the top as many; an
    agent keeps itself unless its draw is strictly fitter (ties never copy)."""
    assert fitness.ndim == 1, fitness.shape
    n = fitness.shape[0]
    k = int(fraction * n)
    own = jnp.arange(n, dtype=jnp.int32)
    if k == 0:
        return own
    order = jnp.argsort(fitness, stable=True)  # ascending: the worst first
    rank = jnp.zeros((n,), jnp.int32).at[order].set(own)
    top = order[n - k:]
    picks = top[jax.random.randint(key, (n,), 0, k)].astype(jnp.int32)
    candidate = (rank < k) | (fitness == -jnp.inf)
    return jnp.where(candidate & (fitness[picks] > fitness), picks, own)


def draw(key: jax.Array, dist: Distribution, n: int) -> jax.Array:
    """``[n]`` float32 values drawn from ``dist`` (the random search's distributions)."""
    values = jnp.asarray(dist.values, jnp.float32)
    if dist.kind == "choice":
        return values[jax.random.randint(key, (n,), 0, len(dist.values))]
    if dist.kind == "uniform":
        return jax.random.uniform(key, (n,), minval=values[0], maxval=values[1])
    lo, hi = math.log(dist.values[0]), math.log(dist.values[1])
    return jnp.exp(jax.random.uniform(key, (n,), minval=lo, maxval=hi))


def perturb(key: jax.Array, x: jax.Array, dist: Distribution, factors: tuple[float, float]) -> jax.Array:
    """``x [n]`` times one of ``factors`` each, clipped to ``dist``'s range; a ``choice`` value
    moves to the next lower or higher choice (staying at an end)."""
    up = jax.random.bernoulli(key, 0.5, x.shape)
    values = jnp.asarray(dist.values, jnp.float32)
    if dist.kind == "choice":
        order = jnp.sort(values)
        at = jnp.argmin(jnp.abs(order[None, :] - x[:, None]), axis=1)
        return order[jnp.clip(at + jnp.where(up, 1, -1), 0, len(dist.values) - 1)]
    return jnp.clip(x * jnp.where(up, factors[1], factors[0]), values[0], values[1])


def explore(key: jax.Array, hparams: HParams, replaced: jax.Array, space: Space, resample_prob: float,
            factors: tuple[float, float]) -> HParams:
    """The hyperparameters after exploration: each field of ``space`` of each ``replaced [P]`` agent
    resampled with probability ``resample_prob``, else perturbed; the others unchanged."""
    assert replaced.ndim == 1, replaced.shape
    n = replaced.shape[0]
    changes = {}
    for i, (field, dist) in enumerate(sorted(space.items())):
        k_choose, k_draw, k_perturb = jax.random.split(jax.random.fold_in(key, i), 3)
        x = getattr(hparams, field)
        resample = jax.random.bernoulli(k_choose, resample_prob, (n,))
        new = jnp.where(resample, draw(k_draw, dist, n), perturb(k_perturb, x, dist, factors))
        changes[field] = jnp.where(replaced, new, x).astype(x.dtype)
    return hparams.replace(**changes)


def copy_learned(states: Any, parents: jax.Array) -> Any:
    """``states`` with what training learned taken from ``parents [A]`` (the agent axis first): the
    parameters, optimiser state, normalisation statistics, KL controller and update count."""
    take = lambda tree: jax.tree_util.tree_map(lambda x: x[parents], tree)
    return states.replace(params=take(states.params), opt_state=take(states.opt_state),
                          obs_rms=take(states.obs_rms), ret_rms=take(states.ret_rms), kl=take(states.kl),
                          update_step=take(states.update_step))


# ---- one generation over the whole agent axis -----------------------------------------------------


def make_generation(pbt: PBTConfig, space: Space, num_agents: int) -> Callable:
    """``generation(states, carry) -> (states, carry, Generation)`` over the ``[A']`` agent axis (the
    first ``num_agents`` real, the rest padding that is never chosen or replaced)."""
    pop = num_agents // pbt.num_populations

    def generation(states, carry: PBTCarry):
        key, k_select, k_explore = jax.random.split(carry.key, 3)
        mean = carry.return_sum / jnp.maximum(carry.episodes, 1)
        fitness = jnp.where(carry.episodes > 0, mean, carry.fitness)
        diverged = ~jax.vmap(finite_state)(states) | jnp.isnan(fitness)
        fitness = jnp.where(diverged, -jnp.inf, fitness)
        n_all = fitness.shape[0]
        blocks = fitness[:num_agents].reshape(pbt.num_populations, pop)
        keys = jax.random.split(k_select, pbt.num_populations)
        local = jax.vmap(lambda k, f: truncation_parents(k, f, pbt.fraction))(keys, blocks)
        parents = (local + (jnp.arange(pbt.num_populations, dtype=jnp.int32) * pop)[:, None]).reshape(-1)
        parents = jnp.concatenate([parents, jnp.arange(num_agents, n_all, dtype=jnp.int32)])
        replaced = parents != jnp.arange(n_all)
        states = copy_learned(states, parents)
        hparams = jax.tree_util.tree_map(lambda x: x[parents], carry.hparams)
        hparams = explore(k_explore, hparams, replaced, space, pbt.resample_prob, pbt.factors)
        zeros = jnp.zeros_like(carry.return_sum)
        carry = PBTCarry(key, hparams, zeros, zeros, fitness[parents])
        return states, carry, Generation(jnp.asarray(True), parents, fitness, diverged, hparams)

    return generation


def make_pbt_chunk(trainer: Trainer, pbt: PBTConfig, space: Space, num_agents: int) -> Callable:
    """``chunk(states, carry, length) -> ((states, carry), (metrics, Generation))``: ``length`` vmapped
    updates, a generation after each ``interval``-th (never after the last update)."""
    generation = make_generation(pbt, space, num_agents) if pbt.fraction else None
    num_updates = trainer.config.num_updates

    def step(state_carry, _):
        states, carry = state_carry
        states, metrics = jax.vmap(trainer.update)(states, carry.hparams)
        returns, ended = metrics["charts/episodic_return"], metrics["charts/episodes"]
        carry = carry._replace(return_sum=carry.return_sum + jnp.where(ended > 0, returns * ended, 0.0),
                               episodes=carry.episodes + ended)
        n = carry.return_sum.shape[0]
        skip = Generation(jnp.asarray(False), jnp.arange(n, dtype=jnp.int32), jnp.full((n,), jnp.nan),
                          jnp.zeros((n,), bool), carry.hparams)
        if generation is None:
            return (states, carry), (metrics, skip)
        done = states.update_step[0]
        due = (done % pbt.interval == 0) & (done < num_updates)
        states, carry, record = jax.lax.cond(due, generation, lambda s, c: (s, c, skip), states, carry)
        return (states, carry), (metrics, record)

    def chunk(states, carry, length):
        (states, carry), out = jax.lax.scan(step, (states, carry), None, length=length)
        # the scan stacks updates first ([length, agents]); agents first, as the sweep's metrics
        return (states, carry), jax.tree_util.tree_map(lambda x: jnp.moveaxis(x, 0, 1) if x.ndim > 1 else x, out)

    return chunk


def pbt_digest(pbt: PBTConfig, space: Space, num_agents: int) -> str:
    """A short name of the PBT settings, so a saved chunk program is never reused for other ones."""
    spec = {"pbt": list(pbt), "space": {f: [d.kind, *d.values] for f, d in sorted(space.items())}, "n": num_agents}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def _pbt_init(trainer: Trainer) -> Callable:
    """``init(key_data [A'], hparams [A'], pbt key data) -> (states, PBTCarry)``; PBT's key is an
    argument: a saved program must not hold it."""

    def init(key_data, hparams, pbt_key_data):
        states = jax.vmap(trainer.init)(jax.random.wrap_key_data(key_data), hparams)
        zeros = jnp.zeros(hparams.lr.shape, jnp.float32)
        return states, PBTCarry(jax.random.wrap_key_data(pbt_key_data), hparams, zeros, zeros,
                                jnp.full(zeros.shape, -jnp.inf))

    return init


def run_pbt(trainer: Trainer, keys: jax.Array, hparams: HParams, pbt: PBTConfig, space: Space,
            key: jax.Array, mesh: Mesh | None = None, chunk_updates: int | None = None,
            on_chunk: Callable[[int], None] | None = None, programs: Compiler | None = None,
            start: Progress | None = None, on_progress: Callable[[Progress], None] | None = None):
    """Train the ``A`` agents (``keys [A]``, initial ``hparams [A]``) as PBT populations in one program.

    Like :func:`~purejaxppo.scale.agents.run_agents` in chunks (``chunk_updates``, default all
    updates in one), over the devices of ``mesh``; ``key`` drives selection and exploration.
    ``start`` and ``on_progress`` continue from and report a :class:`~purejaxppo.scale.agents.Progress`
    as in :func:`~purejaxppo.scale.agents.run_agents`.
    Returns ``(final states, metrics [A, num_updates], PBTRecord)``.

    Example:
        >>> import jax
        >>> from purejaxppo import PPOConfig, make_trainer
        >>> from purejaxppo.scale.plan import Distribution, make_plan, stack_hparams
        >>> trainer = make_trainer(PPOConfig(total_timesteps=8192))
        >>> space = {"lr": Distribution("log-uniform", (1e-4, 1e-2))}
        >>> plan = make_plan(trainer.config, 1, samples=space, num_samples=4)
        >>> _, metrics, record = run_pbt(trainer, plan.agent_keys(), stack_hparams(trainer.config, plan),
        ...                              PBTConfig(interval=4, fraction=0.25), space, jax.random.key(1))
        >>> record.parent.shape
        (3, 4)
    """
    n_agents = keys.shape[0]
    check_pbt(pbt, space, n_agents)
    mesh = agent_mesh() if mesh is None else mesh
    (key_data, padded_hparams), jit_kw = _agent_args(keys, hparams, mesh)
    saved = programs if programs is not None and mesh.devices.size == 1 and jax.process_count() == 1 else None
    out_shardings = _out_shardings(mesh) if jit_kw else None

    def build(name, fn, call_args, donate_argnums=()):
        if saved is None:
            kw = {} if out_shardings is None else {"out_shardings": out_shardings[name.split("-")[0]]}
            return jax.jit(fn, donate_argnums=donate_argnums, **kw)
        return saved.compile(name, fn, call_args, donate_argnums)

    init = _pbt_init(trainer)
    chunk = make_pbt_chunk(trainer, pbt, space, n_agents)
    digest = pbt_digest(pbt, space, n_agents)

    def compile_chunk(k, carry):
        program = build(f"pbt-chunk{k}-{digest}", functools.partial(chunk, length=k), carry, (0, 1))

        def call(carry):
            carry, (metrics, gens) = program(*carry)
            return carry, {**metrics, **_gens_outputs(gens)}

        return call

    if start is None:
        init_args = (key_data, padded_hparams, np.asarray(jax.random.key_data(key)))
        carry, outputs, done = build("init-pbt", init, init_args)(*init_args), None, 0
    else:
        carry, outputs, done = start.carry, start.outputs, start.done
    step = trainer.config.num_updates if chunk_updates is None else chunk_updates
    end = run_chunks(carry, outputs, done, trainer.config.num_updates, step, compile_chunk, on_chunk, on_progress)
    metrics = {name: v[:n_agents] for name, v in end.outputs.items() if not name.startswith(GENS)}
    return end.carry[0], metrics, _record(_gens_of(end.outputs), hparams, space, n_agents)


GENS = "pbt/"  # the prefix of the generation records among a chunk's outputs


def _gens_outputs(gens: Generation) -> dict[str, jax.Array]:
    """A chunk's generation records as named outputs ``[A', k]`` (``selected`` as ``[1, k]``)."""
    out = {f"{GENS}{f}": getattr(gens, f) for f in ("parent", "fitness", "diverged")}
    out[f"{GENS}selected"] = gens.selected[None]
    out.update({f"{GENS}hparams/{f.name}": getattr(gens.hparams, f.name) for f in dataclasses.fields(HParams)})
    return out


def _gens_of(outputs: dict[str, np.ndarray]) -> Generation:
    """The :class:`Generation` columns ``[A', updates]`` (``selected [updates]``) of joined outputs."""
    hp = HParams(**{f.name: outputs[f"{GENS}hparams/{f.name}"] for f in dataclasses.fields(HParams)})
    return Generation(outputs[f"{GENS}selected"][0], outputs[f"{GENS}parent"], outputs[f"{GENS}fitness"],
                      outputs[f"{GENS}diverged"], hp)


def initial_pbt_carry(trainer: Trainer, keys: jax.Array, hparams: HParams) -> Any:
    """The shapes and dtypes of a PBT population's initial carry (one device): what a saved
    :class:`~purejaxppo.scale.agents.Progress` of :func:`run_pbt` is restored into."""
    (key_data, padded), _ = _agent_args(keys, hparams, agent_mesh(jax.local_devices()[:1]))
    return jax.eval_shape(_pbt_init(trainer), key_data, padded, np.asarray(jax.random.key_data(jax.random.key(0))))


def _out_shardings(mesh: Mesh) -> dict[str, Any]:
    """The programs' output shardings over several devices: the agent axis of every per-agent array
    split as ``P("agents")``; PBT's key and the per-update ``selected`` flags replicated."""
    agents, whole = NamedSharding(mesh, PartitionSpec("agents")), NamedSharding(mesh, PartitionSpec())
    carry = PBTCarry(whole, agents, agents, agents, agents)
    return {"init": (agents, carry), "pbt": ((agents, carry), (agents, Generation(whole, agents, agents, agents, agents)))}


def _record(gens: Generation, initial: HParams, space: Space, n_agents: int) -> PBTRecord:
    """The generations' columns of the per-update records ([A', updates] each, padding included)."""
    rows = np.flatnonzero(gens.selected)
    values = {f: np.concatenate([np.asarray(getattr(initial, f))[None, :n_agents],
                                 np.asarray(getattr(gens.hparams, f))[:n_agents, rows].T]) for f in sorted(space)}
    return PBTRecord(rows + 1, gens.parent[:n_agents, rows].T, gens.fitness[:n_agents, rows].T,
                     gens.diverged[:n_agents, rows].T, values)


def pbt_key(config: Any) -> jax.Array:
    """The key of a sweep's selection and exploration, from ``config.seed`` (apart from the plan's
    seed keys and random-search draws)."""
    return jax.random.fold_in(jax.random.key(config.seed), 2)
