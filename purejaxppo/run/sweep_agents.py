"""A sweep's agents kept and used: the population's checkpoint and one agent taken from it.

The ``sweep`` command writes every agent's final state (parameters, optimiser state, observation
and return normalisers, KL coefficient) and the hyperparameters it ended with (a PBT population
explores them) as one Orbax checkpoint, ``SWEEP/agents``. Agent ``I`` (setting ``I // seeds``,
seed ``I % seeds``, the ``agent`` column of ``results.csv``) is then evaluated and rendered with
``purejaxppo eval --run SWEEP --agent I``, loaded with ``load_policy(SWEEP, agent=I)``, or
continued as a longer single run with ``purejaxppo train --init-from SWEEP --agent I``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import numpy as np

from purejaxppo.core.config import HParams, PPOConfig
from purejaxppo.core.train import Trainer, make_trainer
from purejaxppo.errors import CheckpointError, ConfigError
from purejaxppo.run import layout
from purejaxppo.run.checkpoints import from_savable, restore_tree, savable_shapes, save_tree, to_savable
from purejaxppo.run.compiled import init_shapes, make_programs

# the learned parts of a state, which an agent passes on to a run it seeds (the rest starts afresh)
LEARNED = ("params", "opt_state", "obs_rms", "ret_rms", "kl")


def save_agents(out: str, states: Any, hparams: HParams) -> None:
    """Write the population (``states`` RunnerState ``[A, ...]``, ``hparams [A]``) to ``out/agents``."""
    # NumPy arrays: Orbax refuses a process-local jax.Array when there are several processes
    tree = jax.tree_util.tree_map(np.asarray, {"states": to_savable(states), "hparams": hparams})
    save_tree(os.path.join(out, layout.SWEEP_AGENTS), tree, this_process_only=True)


def agent_config(config: PPOConfig, hparams: HParams) -> PPOConfig:
    """``config`` with one agent's hyperparameters (``hparams``, unbatched), each written as the
    shortest decimal that is the same float32."""
    return config.replace(**{f.name: float(str(np.float32(getattr(hparams, f.name))))
                             for f in dataclasses.fields(HParams)})


def load_agent(sweep_dir: str, agent: Any, program_cache: str | None = None) -> tuple[PPOConfig, Trainer, int, Any]:
    """``(config, trainer, updates, state)`` of agent ``agent`` of the sweep in ``sweep_dir``:
    the sweep's configuration with the agent's final hyperparameters, a trainer for it, the
    updates it trained, and its final RunnerState (unbatched)."""
    config, spec = layout.read_sweep(sweep_dir)
    count = spec.get("num_agents")
    path = os.path.join(sweep_dir, layout.SWEEP_AGENTS)
    if not isinstance(count, int) or not os.path.isdir(path):
        raise CheckpointError(f"{sweep_dir} keeps no agents (it has no {layout.SWEEP_AGENTS}/ checkpoint: a sweep "
                              "made before agents were kept, or one still running); accepted: a finished sweep")
    if isinstance(agent, bool) or not isinstance(agent, (int, np.integer)) or not 0 <= agent < count:
        raise ConfigError(f"agent: got {agent!r}; accepted: an agent index from 0 to {count - 1} (the agent column of "
                          f"{os.path.join(sweep_dir, layout.SWEEP_RESULTS)})")
    trainer = make_trainer(config)
    one = init_shapes(trainer, make_programs(trainer, program_cache))
    stacked = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct((count, *x.shape), x.dtype), one)
    hparams_like = jax.tree_util.tree_map(lambda x: np.zeros((count,), np.float32), HParams.from_config(config))
    try:
        tree = restore_tree(path, {"states": savable_shapes(stacked), "hparams": hparams_like})
    except Exception as e:  # noqa: BLE001 - a damaged or foreign checkpoint: one line, nothing moved
        raise CheckpointError(f"the agents' checkpoint {path} cannot be read: {type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200] if str(e) else ''}") from None
    states = from_savable(tree["states"], stacked)
    state = jax.tree_util.tree_map(lambda x: x[agent], states)
    hparams = jax.tree_util.tree_map(lambda x: x[agent], tree["hparams"])
    return agent_config(config, hparams), trainer, int(config.num_updates), state


def seeded_state(fresh: Any, agent_state: Any) -> Any:
    """A fresh RunnerState whose learned parts (:data:`LEARNED`) are an agent's: the run it seeds
    continues its parameters, optimiser and normalisers in fresh environments."""
    check_fits(fresh, agent_state)
    return fresh.replace(**{name: getattr(agent_state, name) for name in LEARNED})


def check_fits(fresh: Any, agent_state: Any) -> None:
    """The agent's learned parts have the shapes of ``fresh``'s (a state or its ``eval_shape``: the
    same networks, environment and normalisation), else one line names the first part that differs."""
    for name in LEARNED:
        mine, theirs = getattr(fresh, name), getattr(agent_state, name)
        same = jax.tree_util.tree_structure(mine) == jax.tree_util.tree_structure(theirs) and all(
            tuple(a.shape) == tuple(b.shape) and a.dtype == b.dtype
            for a, b in zip(jax.tree_util.tree_leaves(mine), jax.tree_util.tree_leaves(theirs)))
        if not same:
            raise ConfigError(f"--init-from: the agent's {name} does not fit this run's (another network, environment "
                              "or normalisation); accepted: the sweep's own env, networks and normalisation settings")
