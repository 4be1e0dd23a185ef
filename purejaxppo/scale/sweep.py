"""Many agents in one compiled program: seeds x hyperparameter settings, vmapped and sharded.

A sweep is a plan (:mod:`~purejaxppo.scale.plan`: which settings, how many seeds), run by
:func:`~purejaxppo.scale.agents.run_agents` as one ``jit`` of ``vmap(train)`` over a flat
agent axis sharded over the devices (or in chunks of vmapped updates, with the same numbers),
then summarised per agent (final return, area under the curve). Agent ``g * S + s`` uses
setting ``g`` and the ``s``-th seed key (the same seed keys for every setting, so settings are
compared on common random numbers, and any agent can be reproduced, to float rounding, by a
single ``train`` call with its key and hyperparameters).

The public :func:`purejaxppo.sweep` (in :mod:`purejaxppo.run.sweeps`) makes the plan and runs it
here, through the saved programs of a cache folder when given one.

Only the float hyperparameters of :class:`~purejaxppo.core.config.HParams` can be swept:
they are traced inputs. A static field (one that changes shapes or the program, such as
``num_envs`` or the network widths) is refused with the list of sweepable fields.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from purejaxppo.core.config import HParams
from purejaxppo.core.metrics import FINITE_METRICS, final_return
from purejaxppo.core.train import Trainer
from purejaxppo.errors import ConfigError
from purejaxppo.scale.agents import Compiler, Progress, agents_on_host, run_agents
from purejaxppo.scale.pbt import PBTConfig, Space, pbt_key, run_pbt
from purejaxppo.scale.plan import SweepPlan, stack_hparams


class SweepResult(NamedTuple):
    settings: list[dict[str, float]]  # G settings: swept field -> value
    seeds: int  # S
    metrics: dict[str, np.ndarray]  # name -> [G, S, num_updates]
    final_return: np.ndarray  # [G, S]
    auc: np.ndarray  # [G, S] mean episodic return over training
    hparams: HParams  # [G * S] the hyperparameters of every agent
    keys: jax.Array  # [S] seed keys
    pbt: Any = None  # a PBT sweep's PBTRecord (lineage, fitness, explored values per generation); None otherwise
    diverged: np.ndarray | None = None  # [G, S] True where an agent's losses or returns became non-finite
    states: Any = None  # RunnerState [G * S, ...]: every agent's final state (parameters, optimiser, normalisers)
    final_hparams: HParams | None = None  # [G * S] the hyperparameters each agent ended with (PBT explores them)

    def agent(self, index: int) -> tuple[Any, HParams]:
        """``(final RunnerState, final HParams)`` of agent ``index`` (setting ``index // seeds``, seed
        ``index % seeds``), as :func:`~purejaxppo.core.train.make_trainer`'s programs take them."""
        count = len(self.settings) * self.seeds
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < count:
            raise ConfigError(f"agent: got {index!r}; accepted: an agent index from 0 to {count - 1}")
        pick = lambda x: x[index]  # noqa: E731
        return jax.tree_util.tree_map(pick, self.states), jax.tree_util.tree_map(pick, self.final_hparams)


def diverged_agents(metrics: dict[str, np.ndarray]) -> np.ndarray:
    """``[...]`` True for each agent (metrics ``[..., num_updates]``) whose losses, or the return of an
    update that ended episodes, are non-finite anywhere (:func:`~purejaxppo.core.metrics.first_non_finite`
    for a batch of agents): its policy is NaN, and what it still scores is not a return of PPO."""
    bad = np.zeros(np.shape(metrics["charts/episodic_return"])[:-1], bool)
    for name in FINITE_METRICS:
        bad |= ~np.isfinite(np.asarray(metrics[name], np.float64)).all(axis=-1)
    ended = np.asarray(metrics["charts/episodes"]) > 0
    bad |= (ended & ~np.isfinite(np.asarray(metrics["charts/episodic_return"], np.float64))).any(axis=-1)
    return bad


def run_plan(trainer: Trainer, plan: SweepPlan, mesh: Mesh | None = None, chunk_updates: int | None = None,
             on_chunk: Callable[[int], None] | None = None, programs: Compiler | None = None,
             pbt: PBTConfig | None = None, space: Space | None = None, start: Progress | None = None,
             on_progress: Callable[[Progress], None] | None = None) -> SweepResult:
    """Train every agent of ``plan`` with ``trainer``'s program, over the devices of ``mesh``
    (in chunks of ``chunk_updates`` updates, calling ``on_chunk(updates done)`` between them),
    through the saved programs of ``programs`` on one device (:func:`run_agents`); with ``pbt``,
    the agents are a PBT population exploring ``space`` (:func:`~purejaxppo.scale.pbt.run_pbt`);
    ``start`` and ``on_progress`` continue from and report the population between chunks
    (:class:`~purejaxppo.scale.agents.Progress`, a checkpoint)."""
    hparams = stack_hparams(trainer.config, plan)
    record, final_hparams = None, hparams
    if pbt is None:
        states, metrics = run_agents(trainer, plan.agent_keys(), hparams, mesh, chunk_updates, on_chunk, programs,
                                     start, on_progress)
    else:
        states, metrics, record = run_pbt(trainer, plan.agent_keys(), hparams, pbt, space or {},
                                          pbt_key(trainer.config), mesh, chunk_updates, on_chunk, programs, start,
                                          on_progress)
        final_hparams = hparams.replace(**{f: jnp.asarray(v[-1]) for f, v in record.hparams.items()})
    states = agents_on_host(states, plan.num_agents)
    g, s = len(plan.settings), plan.num_seeds
    shaped = {k: v.reshape((g, s) + v.shape[1:]) for k, v in metrics.items()}
    returns = shaped["charts/episodic_return"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an agent with no finished episode has no AUC
        # in float64: a float32 sum's rounding would depend on how the chunks' outputs were joined
        auc = np.nanmean(np.asarray(returns, np.float64), axis=-1)
    # a PBT member that diverged was replaced by a copy of a better one: only its last update tells
    diverged = diverged_agents(shaped if record is None else {k: v[..., -1:] for k, v in shaped.items()})
    finals = np.where(diverged, np.nan, np.asarray(final_return(shaped), np.float64))
    auc = np.where(diverged, np.nan, auc)  # a diverged agent has no return to rank: its scores are NaN
    return SweepResult(plan.settings, s, shaped, finals, auc, hparams, plan.seed_keys, pbt=record, diverged=diverged,
                       states=states, final_hparams=final_hparams)
