"""XLand-MiniGrid (``xminigrid/<task>``): MiniGrid's grid worlds and XLand's meta-RL tasks.

XLand-MiniGrid steps like dm_env: the last step of an episode is ``LAST``, with discount 0
when the goal was reached (``terminated``) and 1 when ``step_num`` reached
``params.max_steps`` (``truncated``). The time limit is the library's own
(``params.suite.max_steps``). Observations: the agent's view, ``[view, view, 2]`` (tile and
colour ids).

XLand tasks (``xminigrid/XLand-MiniGrid-R1-9x9`` ...) draw a ruleset (goal, rules, objects)
from a benchmark at every reset. The benchmarks are files the library downloads from the
Hugging Face Hub; purejaxppo never downloads at run time, so an XLand name needs the
``trivial-21k`` benchmark already on disk in ``$XLAND_MINIGRID_DATA`` (default
``~/.xland_minigrid``); fetch it once with
``python -c "import xminigrid; xminigrid.load_benchmark('trivial-21k')"``. The MiniGrid
tasks need nothing beyond the package.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp

from purejaxppo.envs.suites import SuiteEnv, SuiteParams, box, dm_end, import_or_explain
from purejaxppo.errors import ConfigError

PREFIX = "xminigrid/"
MINIGRID = ("MiniGrid-Empty-5x5", "MiniGrid-Empty-6x6", "MiniGrid-Empty-8x8", "MiniGrid-Empty-16x16",
            "MiniGrid-EmptyRandom-5x5", "MiniGrid-EmptyRandom-6x6", "MiniGrid-EmptyRandom-8x8",
            "MiniGrid-EmptyRandom-16x16", "MiniGrid-DoorKey-5x5", "MiniGrid-DoorKey-6x6", "MiniGrid-DoorKey-8x8",
            "MiniGrid-DoorKey-16x16", "MiniGrid-FourRooms", "MiniGrid-LockedRoom", "MiniGrid-MemoryS8",
            "MiniGrid-MemoryS16", "MiniGrid-MemoryS32", "MiniGrid-MemoryS64", "MiniGrid-MemoryS128",
            "MiniGrid-Playground", "MiniGrid-Unlock", "MiniGrid-UnlockPickUp", "MiniGrid-BlockedUnlockPickUp")
XLAND = tuple(f"XLand-MiniGrid-R{r}-{n}x{n}" for r, sizes in
              ((1, (9, 11, 13, 15, 17)), (2, (9, 11, 13, 15, 17)), (4, (9, 11, 13, 15, 17)), (6, (13, 17, 19)),
               (9, (16, 19, 25))) for n in sizes)
TASKS = MINIGRID + XLAND
BENCHMARK = "trivial-21k"


def benchmark_path(name: str = BENCHMARK) -> str:
    """Where the library keeps benchmark ``name`` (read at call time, so a test may point it elsewhere)."""
    from xminigrid.benchmarks import NAME2HFFILENAME

    root = os.environ.get("XLAND_MINIGRID_DATA", os.path.expanduser("~/.xland_minigrid"))
    return os.path.join(root, NAME2HFFILENAME[name])


def load_benchmark(name: str = BENCHMARK) -> Any:
    """Benchmark ``name`` from disk, never downloaded; a one-line error says how to fetch it."""
    from xminigrid.benchmarks import load_benchmark_from_path

    path = benchmark_path(name)
    if not os.path.exists(path):
        raise ConfigError(f"env: XLand tasks draw their rulesets from the {name} benchmark, which is not on disk "
                          f"({path}); accepted: fetch it once with python -c \"import xminigrid; "
                          f"xminigrid.load_benchmark('{name}')\" (purejaxppo never downloads at run time), "
                          f"or a MiniGrid task")
    return load_benchmark_from_path(path)


class XMiniGridEnv(SuiteEnv):
    """An XLand-MiniGrid task as a gymnax environment."""

    prefix = PREFIX

    def __init__(self, task: str, benchmark: Any = None):
        super().__init__()
        xminigrid = import_or_explain("xminigrid", "xminigrid")
        self.task = task
        self.xminigrid, suite_params = xminigrid.make(task)
        if task.startswith("XLand"):
            self.benchmark = load_benchmark() if benchmark is None else benchmark
        else:
            self.benchmark = None
        self._params = SuiteParams(suite=suite_params)

    @property
    def num_actions(self) -> int:
        return int(self.xminigrid.num_actions(self._params.suite))

    def suite_reset(self, key: jax.Array, params: SuiteParams) -> tuple[jax.Array, Any]:
        suite = params.suite
        if self.benchmark is not None:
            key, ruleset_key = jax.random.split(key)
            suite = suite.replace(ruleset=self.benchmark.sample_ruleset(ruleset_key))
        timestep = self.xminigrid.reset(suite, key)
        return timestep.observation, timestep

    def suite_step(self, key: jax.Array, inner: Any, action: jax.Array, params: SuiteParams):
        timestep = self.xminigrid.step(params.suite, inner, action)  # its randomness lives in its state
        terminated, truncated = dm_end(timestep.last(), timestep.discount)
        return timestep.observation, timestep, timestep.reward, terminated, truncated, {}

    def action_space(self, params: SuiteParams | None = None):
        from gymnax.environments import spaces

        return spaces.Discrete(self.num_actions)

    def observation_space(self, params: SuiteParams):
        return box(self.xminigrid.observation_shape(params.suite), 0.0, jnp.inf)


def make(task: str) -> XMiniGridEnv:
    return XMiniGridEnv(task)
