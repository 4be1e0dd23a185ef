"""Navix (``navix/<task>``): MiniGrid's tasks re-implemented in JAX.

Navix's step says how an episode ended in its ``step_type``: ``TERMINATION`` (2; the goal
reached, or lava) is ``terminated``, ``TRUNCATION`` (1; ``t >= max_steps``, 100 steps by
default, the library's own limit) is ``truncated``; Navix reports a step that is both as a
termination. Observations: Navix's default symbolic ones, ``[H, W, 3]``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from purejaxppo.envs.suites import SuiteEnv, SuiteParams, box, import_or_explain

PREFIX = "navix/"
_SIZED = tuple(f"Navix-{kind}-{n}x{n}-v0" for kind in ("Empty", "Empty-Random", "DoorKey", "DoorKey-Random")
               for n in (5, 6, 8, 16))
_OBSTACLES = tuple(f"Navix-Dynamic-Obstacles-{n}-v0"
                   for n in ("5x5", "5x5-Random", "6x6", "6x6-Random", "8x8", "16x16"))
TASKS = _SIZED + _OBSTACLES + tuple(f"Navix-GoToDoor-{n}x{n}-v0" for n in (5, 6, 8)) + (
    "Navix-FourRooms-v0", "Navix-DistShift1-v0", "Navix-DistShift2-v0", "Navix-LavaGapS5-v0", "Navix-LavaGapS6-v0",
    "Navix-LavaGapS7-v0", "Navix-KeyCorridorS3R1-v0", "Navix-KeyCorridorS3R2-v0", "Navix-KeyCorridorS3R3-v0",
    "Navix-KeyCorridorS4R3-v0", "Navix-KeyCorridorS5R3-v0", "Navix-KeyCorridorS6R3-v0", "Navix-SimpleCrossingS9N1-v0",
    "Navix-SimpleCrossingS9N2-v0", "Navix-SimpleCrossingS9N3-v0", "Navix-SimpleCrossingS11N5-v0")
TERMINATION, TRUNCATION = 2, 1  # navix.StepType


class NavixEnv(SuiteEnv):
    """A Navix task as a gymnax environment."""

    prefix = PREFIX

    def __init__(self, task: str, **kwargs: Any):
        super().__init__()
        navix = import_or_explain("navix", "navix")
        self.task = task
        self.navix = navix.make(task, **kwargs)  # kwargs: e.g. max_steps
        self._params = SuiteParams()

    @property
    def num_actions(self) -> int:
        return len(self.navix.action_set)

    def suite_reset(self, key: jax.Array, params: SuiteParams) -> tuple[jax.Array, Any]:
        timestep = self.navix.reset(key)
        return timestep.observation, timestep

    def suite_step(self, key: jax.Array, inner: Any, action: jax.Array, params: SuiteParams):
        # Navix's public step chooses between a reset and ``_step`` with a cond, which under vmap
        # runs both at every step; the adapter does the reset itself, so it steps with ``_step``.
        timestep = self.navix._step(inner, action)
        step_type = timestep.step_type
        return (timestep.observation, timestep, timestep.reward, step_type == TERMINATION,
                step_type == TRUNCATION, {})

    def action_space(self, params: SuiteParams | None = None):
        from gymnax.environments import spaces

        return spaces.Discrete(self.num_actions)

    def observation_space(self, params: SuiteParams):
        return box(self.navix.observation_space.shape, 0.0, jnp.inf)


def make(task: str) -> NavixEnv:
    return NavixEnv(task)
