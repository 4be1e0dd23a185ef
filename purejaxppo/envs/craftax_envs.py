"""Craftax (``craftax/<task>``): the open-ended survival game, full and Classic, symbolic or pixels.

Craftax's own step reports one ``done`` that mixes three ends: the player died, the boss was
beaten (Classic: died or stepped into lava), or ``timestep >= params.max_timesteps`` (100 000
steps for Craftax, 10 000 for Classic). The adapter asks Craftax's own ``is_terminal`` again
with the time limit lifted: what it still calls an end is ``terminated``; an end it called
only because of the time is ``truncated``. The time limit is Craftax's
``params.suite.max_timesteps``. Observations: the symbolic ones are Craftax's flat vectors
(map and inventory), the pixel ones ``[H, W, 3]`` images.
"""

from __future__ import annotations

from typing import Any

import jax

from purejaxppo.envs.suites import NO_LIMIT, SuiteEnv, SuiteParams, box, import_or_explain

PREFIX = "craftax/"
TASKS = ("Craftax-Symbolic-v1", "Craftax-Classic-Symbolic-v1", "Craftax-Pixels-v1", "Craftax-Classic-Pixels-v1")


class CraftaxEnv(SuiteEnv):
    """A Craftax task (the library's no-auto-reset environment) as a gymnax environment."""

    prefix = PREFIX
    costly_reset = True  # a reset generates a world (:mod:`purejaxppo.envs.vector`)

    def __init__(self, task: str):
        super().__init__()
        craftax_env = import_or_explain("craftax.craftax_env", "craftax")
        self.task = task
        self.craftax = craftax_env.make_craftax_env_from_name(task, auto_reset=False)
        self._params = SuiteParams(suite=self.craftax.default_params)
        self._obs_shape = tuple(self.craftax.observation_space(self.craftax.default_params).shape)

    @property
    def num_actions(self) -> int:
        return int(self.craftax.num_actions)

    def suite_reset(self, key: jax.Array, params: SuiteParams) -> tuple[jax.Array, Any]:
        return self.craftax.reset_env(key, params.suite)

    def suite_step(self, key: jax.Array, inner: Any, action: jax.Array, params: SuiteParams):
        obs, inner, reward, done, info = self.craftax.step_env(key, inner, action, params.suite)
        # Craftax's own test of the end, without its time limit: death, the boss, lava
        terminated = self.craftax.is_terminal(inner, params.suite.replace(max_timesteps=NO_LIMIT))
        truncated = done & ~terminated
        return obs, inner, reward, terminated, truncated, info

    def action_space(self, params: SuiteParams | None = None):
        from gymnax.environments import spaces

        return spaces.Discrete(self.num_actions)

    def observation_space(self, params: SuiteParams):
        return box(self._obs_shape, 0.0, 1.0)


def make(task: str) -> CraftaxEnv:
    return CraftaxEnv(task)


__all__ = ["CraftaxEnv", "PREFIX", "TASKS", "make"]
