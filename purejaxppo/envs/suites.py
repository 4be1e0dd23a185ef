"""JAX environment suites (Craftax, XLand-MiniGrid, Navix, Jumanji, MuJoCo Playground) on gymnax 1.0's API.

Each suite has one module (``craftax_envs``, ``xminigrid_envs``, ``navix_envs``, ``jumanji_envs``,
``playground_envs``): a maker that builds the suite's own environment, imported only when a
name of that suite is made, and an adapter, a :class:`SuiteEnv` that turns the suite's
reset and step into gymnax's, so :class:`~purejaxppo.envs.adapter.EnvAdapter` and every
core wrapper see one interface. A name is ``<suite>/<task>``, e.g. ``craftax/Craftax-Symbolic-v1``.

What every adapter keeps, from the suite's own signals:

* ``terminated`` (a true end: the value after it is zero) apart from ``truncated`` (a time
  limit: the learner bootstraps from the last observation). A dm_env-style step
  (XLand-MiniGrid, Jumanji) ends with ``LAST``: discount 0 is a termination, a positive
  discount a truncation. Craftax, Navix and Playground say it their own way (see each module);
* the observation the step reached before the automatic reset (``info["final_observation"]``);
* the suite's observation shape (``observation_space(params).shape``, e.g. a grid ``[H, W, C]``);
  the adapter flattens it to ``float32 [obs_dim]``;
* an action mask where the suite has one (an ``action_mask(state, params)`` method, e.g. Jumanji's;
  :meth:`EnvAdapter.action_mask` gives all ``True`` elsewhere).

Each suite is an optional extra (``pip install -e ".[craftax]"``, ..., ``".[suites]"`` for all).
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

from purejaxppo.errors import ConfigError
from purejaxppo.naming import PLAYGROUND_PREFIX

NO_LIMIT = 2**31 - 1  # a time limit that never ends an episode (int32's largest)


@dataclass(frozen=True)
class Suite:
    """One suite: its name prefix, the module with its tasks and maker, the package it needs, its extra."""

    prefix: str  # "craftax/"
    module: str  # "purejaxppo.envs.craftax_envs"
    package: str  # the import name of the suite's own package
    extra: str  # the pyproject extra that installs it

    @property
    def install(self) -> str:
        return f'pip install -e ".[{self.extra}]"'

    def installed(self) -> bool:
        return importlib.util.find_spec(self.package) is not None

    def tasks(self) -> tuple[str, ...]:
        return importlib.import_module(self.module).TASKS


SUITES = (
    Suite("craftax/", "purejaxppo.envs.craftax_envs", "craftax", "craftax"),
    Suite("xminigrid/", "purejaxppo.envs.xminigrid_envs", "xminigrid", "xminigrid"),
    Suite("navix/", "purejaxppo.envs.navix_envs", "navix", "navix"),
    Suite("jumanji/", "purejaxppo.envs.jumanji_envs", "jumanji", "jumanji"),
    Suite(PLAYGROUND_PREFIX, "purejaxppo.envs.playground_envs", "mujoco_playground", "playground"),
)


def suite_of(name: str) -> Suite | None:
    """The suite a name's prefix names, or ``None``."""
    return next((s for s in SUITES if name.startswith(s.prefix)), None)


def names() -> list[str]:
    """Every suite task name, installed or not."""
    return [s.prefix + t for s in SUITES for t in s.tasks()]


def make(name: str) -> tuple[environment.Environment, Any]:
    """``(env, params)`` for ``<suite>/<task>``.

    Raises:
        ConfigError: an unknown task, or a suite that is not installed (naming its extra).
    """
    suite = suite_of(name)
    task = name[len(suite.prefix):]
    module = importlib.import_module(suite.module)
    if task not in module.TASKS:
        from purejaxppo.naming import suggest

        raise ConfigError(f"env: unknown {suite.prefix[:-1]} task {task!r}{suggest(task, module.TASKS)}; accepted: "
                          f"{suite.prefix}<task> with task one of {', '.join(module.TASKS)}")
    if not suite.installed():
        raise ConfigError(f"env: {name} needs the {suite.extra} extra ({suite.package} is missing); accepted: "
                          f"install it with {suite.install}")
    env = module.make(task)
    return env, env.default_params


def describe() -> str:
    """The suites' names for ``purejaxppo envs``: one heading per suite, and the extra a missing one needs."""
    lines = []
    for s in SUITES:
        note = "" if s.installed() else f"  (not installed: {s.install})"
        lines.append(f"# {s.prefix[:-1]}{note}")
        lines += [s.prefix + t for t in s.tasks()]
    return "\n".join(lines)


def import_or_explain(package: str, extra: str):
    """``import package``, or a one-line ConfigError naming the extra that installs it."""
    try:
        return importlib.import_module(package)
    except ImportError as e:
        raise ConfigError(f"env: the {extra} suite could not be imported ({type(e).__name__}: {e}); accepted: "
                          f'install it with pip install -e ".[{extra}]"') from None


def strong(tree: Any) -> Any:
    """Every leaf as a strongly typed array: the automatic reset selects between the reset's
    state and the step's, and suites build some leaves from Python scalars (weakly typed) in
    one and not the other."""
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype=jnp.asarray(x).dtype), tree)


def dm_end(last: jax.Array, discount: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(terminated, truncated)`` of a dm_env-style step: ``LAST`` with discount 0 is a true end,
    ``LAST`` with a positive discount a time limit."""
    return last & (discount == 0), last & (discount > 0)


@struct.dataclass
class SuiteParams(environment.EnvParams):
    """``max_steps_in_episode``: a time limit the adapter adds (suites without their own);
    ``suite``: the suite's own parameters (``None`` where it has none)."""

    max_steps_in_episode: int = NO_LIMIT
    suite: Any = None


@struct.dataclass
class SuiteState(environment.EnvState):
    """``time``: steps since the episode began; ``inner``: the suite's own state;
    ``truncated``: whether the step that made this state ended the episode at a time limit."""

    inner: Any
    truncated: jax.Array


class SuiteEnv(environment.Environment):
    """A suite's environment as a gymnax 1.0 ``Environment``.

    A suite module implements :meth:`suite_reset` and :meth:`suite_step`, the spaces and
    ``default_params``; this class keeps the time, the truncation flag and the reset's
    state shaped like the step's, and gymnax's ``step`` does the automatic reset and keeps
    ``final_observation``.
    """

    prefix = ""  # the suite's name prefix, e.g. "craftax/"; a subclass sets ``task`` and ``_params``

    @property
    def name(self) -> str:
        return self.prefix + self.task

    @property
    def default_params(self) -> SuiteParams:
        return self._params

    # --- what a suite implements ---------------------------------------------------------
    def suite_reset(self, key: jax.Array, params: SuiteParams) -> tuple[jax.Array, Any]:
        """``key -> (obs [suite shape], inner state)``."""
        raise NotImplementedError

    def suite_step(self, key: jax.Array, inner: Any, action: jax.Array, params: SuiteParams):
        """``-> (obs, inner, reward, terminated, truncated, info)`` from the suite's own signals."""
        raise NotImplementedError

    # --- gymnax's hooks ------------------------------------------------------------------
    def reset_env(self, key: jax.Array, params: SuiteParams) -> tuple[jax.Array, SuiteState]:
        obs, inner = self.suite_reset(key, params)
        state = SuiteState(time=jnp.zeros((), jnp.int32), inner=inner, truncated=jnp.zeros((), bool))
        return strong(obs), strong(state)

    def step_env(self, key: jax.Array, state: SuiteState, action: jax.Array, params: SuiteParams):
        obs, inner, reward, terminated, truncated, info = self.suite_step(key, state.inner, action, params)
        time = state.time + 1
        terminated = jnp.asarray(terminated, bool)
        # a step that ends the episode both ways is a termination: nothing follows it to bootstrap from
        truncated = (jnp.asarray(truncated, bool) | (time >= params.max_steps_in_episode)) & ~terminated
        state = SuiteState(time=time, inner=inner, truncated=truncated)
        return strong(obs), strong(state), jnp.asarray(reward, jnp.float32), terminated, info

    def is_truncated(self, state: SuiteState, params: SuiteParams) -> jax.Array:
        return state.truncated

    def is_terminated(self, state: SuiteState, params: SuiteParams) -> jax.Array:
        raise NotImplementedError("a suite's termination comes from its step (suite_step)")


def box(shape: tuple[int, ...], low: float = -jnp.inf, high: float = jnp.inf) -> spaces.Box:
    """An observation (or action) space of the suite's own shape."""
    return spaces.Box(low, high, tuple(int(n) for n in shape), jnp.float32)
