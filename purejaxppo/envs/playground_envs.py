"""MuJoCo Playground (``playground/<task>``): the DeepMind Control Suite tasks on MJX.

Playground's environments have no time limit of their own (its training wrappers add one);
``state.done`` is the task's own end, ``terminated``. The adapter applies the task's
``episode_length`` from Playground's default config (1000 control steps for the DM Control
tasks) as a truncation, counting each repeated action (``action_repeat``) as Playground's
wrappers do. The physics run on MJX's JAX implementation (``impl="jax"``), which needs no
GPU and no Warp kernels. Actions are continuous in ``[-1, 1]``.

Only the DM Control tasks are listed: they are built from model files that ship with the
package (nothing is downloaded); the locomotion and manipulation tasks fetch robot assets.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from purejaxppo.envs.suites import SuiteEnv, SuiteParams, box, import_or_explain
from purejaxppo.errors import ConfigError
from purejaxppo.naming import PLAYGROUND_PREFIX, PLAYGROUND_TASKS

PREFIX = PLAYGROUND_PREFIX
TASKS = PLAYGROUND_TASKS


class PlaygroundEnv(SuiteEnv):
    """A MuJoCo Playground DM Control task as a gymnax environment."""

    prefix = PREFIX
    costly_reset = True  # a reset solves the model's starting state (:mod:`purejaxppo.envs.vector`)

    def __init__(self, task: str):
        super().__init__()
        import_or_explain("mujoco_playground", "playground")
        from mujoco_playground import dm_control_suite

        self.task = task
        config = dm_control_suite.get_default_config(task)
        self.playground = dm_control_suite.load(task, config_overrides={"impl": "jax"})
        self.action_repeat = int(config.action_repeat)  # static: physics steps per action
        self._params = SuiteParams(max_steps_in_episode=int(config.episode_length) // self.action_repeat)
        self._obs_size = self.playground.observation_size
        if not isinstance(self._obs_size, int):
            raise ConfigError(f"env: {PREFIX}{task} observes a dict {self._obs_size}; accepted: a task with one "
                              "observation vector")

    def suite_reset(self, key: jax.Array, params: SuiteParams) -> tuple[jax.Array, Any]:
        state = self.playground.reset(key)
        return state.obs, state

    def suite_step(self, key: jax.Array, inner: Any, action: jax.Array, params: SuiteParams):
        def physics_step(carry, _):
            s, reward, done = carry
            nxt = self.playground.step(s, action)
            s = jax.tree_util.tree_map(lambda a, b: jnp.where(done, a, b), s, nxt)  # frozen once terminated
            return (s, reward + jnp.where(done, 0.0, nxt.reward), done | (nxt.done > 0)), None

        start = (inner, jnp.zeros((), jnp.float32), jnp.zeros((), bool))
        if self.action_repeat == 1:
            (state, reward, terminated), _ = physics_step(start, None)
        else:
            (state, reward, terminated), _ = jax.lax.scan(physics_step, start, None, self.action_repeat)
        return state.obs, state, reward, terminated, jnp.zeros((), bool), {}

    def action_space(self, params: SuiteParams | None = None):
        return box((self.playground.action_size,), -1.0, 1.0)

    def observation_space(self, params: SuiteParams):
        return box((self._obs_size,))


def make(task: str) -> PlaygroundEnv:
    return PlaygroundEnv(task)
