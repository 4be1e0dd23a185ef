"""Jumanji (``jumanji/<task>``): InstaDeep's combinatorial and game environments.

Jumanji steps like dm_env: ``LAST`` with discount 0 is ``terminated``, ``LAST`` with a
positive discount ``truncated``. Snake, though, reports its own time limit (4000 steps) as a
termination (discount 0), which would teach the learner that the snake's last state is worth
nothing; the adapter builds Snake without that limit and applies the same 4000 steps itself
as a truncation (``params.max_steps_in_episode``). Game2048 has no time limit (an episode ends
when no move is left); ``params.max_steps_in_episode`` can add one.

Observations: the suite's board part, flattened by the adapter: Snake's ``grid`` ``[12, 12, 5]``,
Game2048's ``board`` ``[4, 4]`` (each tile's exponent). JobShop's observation is a record of
arrays (operations' machines, durations and mask, machines' jobs and remaining times): every
part but the action mask, flattened and joined. Every task has an action mask,
:meth:`JumanjiEnv.action_mask`, which the learner applies to its policy (acting, loss,
evaluation). JobShop's action is multi-discrete: each of its 10 machines picks one of 20 jobs
or nothing (21 choices), its mask ``[10, 21]`` laid out as the factored policy's logits; the
episode ends (a termination) when every job is scheduled.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from purejaxppo.envs.suites import NO_LIMIT, SuiteEnv, SuiteParams, SuiteState, box, dm_end, import_or_explain

PREFIX = "jumanji/"
# task -> (the observation field that is the board, the suite's own time limit that the adapter applies)
BOARDS = {"Snake-v1": ("grid", 4000), "Game2048-v1": ("board", NO_LIMIT), "JobShop-v0": (None, NO_LIMIT)}
TASKS = tuple(BOARDS)


class JumanjiEnv(SuiteEnv):
    """A Jumanji task as a gymnax environment."""

    prefix = PREFIX

    def __init__(self, task: str):
        super().__init__()
        jumanji = import_or_explain("jumanji", "jumanji")
        self.task = task
        self.field, max_steps = BOARDS[task]
        kwargs = {"time_limit": NO_LIMIT} if task.startswith("Snake") else {}
        self.jumanji = jumanji.make(task, **kwargs)
        self._params = SuiteParams(max_steps_in_episode=max_steps)

    @property
    def num_actions(self) -> int:
        return int(jnp.sum(jnp.asarray(self.jumanji.action_spec.num_values)))

    def observe(self, observation: Any) -> jax.Array:
        """The board part, or every part but the action mask, flattened and joined (``field`` None)."""
        if self.field is not None:
            return getattr(observation, self.field)
        parts = [jnp.ravel(jnp.asarray(v, jnp.float32)) for k, v in observation._asdict().items() if k != "action_mask"]
        return jnp.concatenate(parts)

    def suite_reset(self, key: jax.Array, params: SuiteParams) -> tuple[jax.Array, Any]:
        state, timestep = self.jumanji.reset(key)
        return self.observe(timestep.observation), state

    def suite_step(self, key: jax.Array, inner: Any, action: jax.Array, params: SuiteParams):
        state, timestep = self.jumanji.step(inner, action)  # its randomness lives in its state
        terminated, truncated = dm_end(timestep.last(), timestep.discount)
        return self.observe(timestep.observation), state, timestep.reward, terminated, truncated, {}

    def action_mask(self, state: SuiteState, params: SuiteParams) -> jax.Array:
        """``bool [num_actions]``: the actions Jumanji allows from ``state`` (``state.inner.action_mask``;
        a multi-discrete task's per-factor masks flattened, as the factored policy's logits)."""
        return jnp.ravel(jnp.asarray(state.inner.action_mask, bool))

    def action_space(self, params: SuiteParams | None = None):
        from gymnax.environments import spaces

        from purejaxppo.envs.adapter import MultiDiscrete

        nvec = jnp.asarray(self.jumanji.action_spec.num_values)
        return MultiDiscrete(nvec.tolist()) if nvec.ndim else spaces.Discrete(int(nvec))

    def observation_space(self, params: SuiteParams):
        if self.field is not None:
            return box(getattr(self.jumanji.observation_spec, self.field).shape)
        spec = self.jumanji.observation_spec
        size = sum(math.prod(getattr(spec, k).shape) for k in spec.__dict__ if k != "action_mask"
                   and hasattr(getattr(spec, k), "shape"))
        return box((size,))


def make(task: str) -> JumanjiEnv:
    return JumanjiEnv(task)
