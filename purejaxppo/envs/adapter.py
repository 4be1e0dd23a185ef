"""The adapter: any gymnax environment by name, seen as flat observations and one action space.

Brax's tasks are named ``brax/<task>`` or ``brax/<task>-<backend>`` (:mod:`purejaxppo.envs.brax_envs`);
the JAX suites' ``<suite>/<task>``, e.g. ``craftax/Craftax-Symbolic-v1`` or ``jumanji/Snake-v1``
(:mod:`purejaxppo.envs.suites`).

``make_env(name)`` returns ``(env, env_params)`` where ``env`` is an :class:`EnvAdapter`
over a gymnax 1.0 ``Environment``: observations are flattened to ``float32`` vectors,
actions are cast (discrete) or clipped to the space's bounds (continuous), and the
step returns gymnax 1.0's ``terminated`` / ``truncated`` split together with the
observation reached *before* the automatic reset (``final_obs``), which the learner
needs to bootstrap through a time limit.

Your own environment: subclass ``gymnax.environments.environment.Environment``
(implement ``step_env``, ``reset_env``, ``action_space``, ``observation_space`` and
``default_params``) and register it once under a name::

    import purejaxppo
    purejaxppo.register_env("MyEnv-v0", MyEnv)
    purejaxppo.make_train(purejaxppo.PPOConfig(env="MyEnv-v0"))

or, with no registration, name a factory in an importable module as ``package.module:factory``
(``--env my_envs:make_grid`` on the command line; a module in the current directory is found
too). The factory is called with no arguments and returns a gymnax ``Environment`` (its
``default_params`` are used) or an ``(env, env_params)`` pair. The name is stored in the run's
``config.json`` like any other, so ``eval`` and ``resume`` import the factory again.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import sys
from collections.abc import Callable
from typing import Any

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
from gymnax.environments import environment, spaces

from purejaxppo.envs import brax_envs, suites
from purejaxppo.errors import ConfigError
from purejaxppo.naming import is_brax, suggest

_ADAPTERS: dict[str, EnvAdapter] = {}


def register_env(name: str, factory: Callable[..., Any]) -> None:
    """Register a gymnax-API environment class or factory under ``name``."""
    if not isinstance(name, str) or not name or is_brax(name) or suites.suite_of(name) or ":" in name:
        prefixes = ", ".join(s.prefix for s in suites.SUITES)
        raise ConfigError(f"register_env: got the name {name!r}; accepted: a non-empty string without ':' (that "
                          f"names a factory, module:factory) that does not start with brax/ or a suite's prefix "
                          f"({prefixes}): those are the suites' tasks")
    if not callable(factory):
        raise ConfigError(f"register_env: got {factory!r} for {name}; accepted: a gymnax Environment class, or a "
                          "function that returns an instance")
    if name in gymnax.registered_envs:
        raise ConfigError(f"register_env: {name} is already registered; accepted: a new name")
    gymnax.registration.register(name, factory)


def known_envs() -> list[str]:
    """Every environment name ``make_env`` accepts (Brax's and each suite's need their extra)."""
    return list(gymnax.registered_envs) + brax_envs.names() + suites.names()


def describe_envs() -> str:
    """The names for ``purejaxppo envs``, one heading per suite, with the extra a missing suite needs."""
    brax_note = "" if importlib.util.find_spec("brax") else f"  (not installed: {brax_envs.EXTRA})"
    return "\n".join(["# gymnax", *gymnax.registered_envs, f"# brax{brax_note}", *brax_envs.names(),
                      suites.describe(), "# your own: --env package.module:factory (see make_env)"])


def accepted_envs() -> str:
    """The accepted names in a few words: every gymnax name, and the Brax ones by pattern."""
    return (f"{', '.join(gymnax.registered_envs)}, or {brax_envs.PREFIX}TASK[-BACKEND] with TASK one of "
            f"{', '.join(brax_envs.TASKS)} and BACKEND one of {', '.join(brax_envs.BACKENDS)} (default "
            f"{brax_envs.DEFAULT_BACKEND}; `purejaxppo envs` lists every name)")


class MultiDiscrete(spaces.Space):
    """A multi-discrete action space (gymnax has none): factor ``i`` takes one of ``nvec[i]`` values;
    an action is int32 ``[len(nvec)]``."""

    def __init__(self, nvec: Any):
        self.nvec = tuple(int(n) for n in nvec)
        self.shape = (len(self.nvec),)
        self.dtype = jnp.int32

    def sample(self, key: jax.Array) -> jax.Array:
        keys = jax.random.split(key, len(self.nvec))
        return jnp.stack([jax.random.randint(k, (), 0, n) for k, n in zip(keys, self.nvec)]).astype(jnp.int32)

    def contains(self, x: jax.Array) -> jax.Array:
        x = jnp.asarray(x)
        return (x.shape == self.shape) & jnp.all((x >= 0) & (x < jnp.asarray(self.nvec)))


class EnvAdapter:
    """A gymnax environment seen as flat float observations and a single action space.

    Attributes:
        name: registered name.
        obs_dim: length of the flattened observation.
        action_kind: ``"discrete"``, ``"multi_discrete"`` or ``"continuous"``.
        num_actions: number of discrete actions (discrete only; multi-discrete: the choices of all
            factors together, ``sum(action_nvec)``, the width of the policy's logits).
        action_nvec: the choices of each factor (multi-discrete only).
        action_dim: length of the action vector (continuous; multi-discrete: the number of factors).
        has_action_mask: whether the environment rules actions out by state (:meth:`action_mask`).
        costly_reset: whether a reset costs far more than a step (the environment class's own
            ``costly_reset``, default False): the vector step then resets only the environments
            whose episode ended (the ``resets`` layout, :mod:`purejaxppo.core.tuning`).
        action_low, action_high: bounds of continuous actions (numpy arrays).
    """

    def __init__(self, name: str, env: Any, params: Any):
        self.name = name
        self.env = env
        self.params = params
        obs_space = env.observation_space(params)
        self.obs_shape = tuple(obs_space.shape)
        self.obs_dim = int(math.prod(self.obs_shape))
        space = env.action_space(params)
        self.has_action_mask = hasattr(env, "action_mask")
        self.costly_reset = bool(getattr(env, "costly_reset", False))
        self.action_nvec: tuple[int, ...] = ()
        if isinstance(space, MultiDiscrete):
            self.action_kind = "multi_discrete"
            self.action_nvec = tuple(int(n) for n in space.nvec)
            self.num_actions = sum(self.action_nvec)
            self.action_dim = len(self.action_nvec)
            self.action_shape = (self.action_dim,)
        elif isinstance(space, spaces.Discrete):
            self.action_kind = "discrete"
            self.num_actions = int(space.n)
            self.action_dim = 1
            self.action_shape: tuple[int, ...] = ()
        elif isinstance(space, spaces.Box):
            self.action_kind = "continuous"
            self.action_shape = tuple(space.shape) or ()
            self.action_dim = int(math.prod(self.action_shape)) if self.action_shape else 1
            self.num_actions = 0
            self.action_low = np.broadcast_to(np.asarray(space.low, np.float32), (self.action_dim,)).copy()
            self.action_high = np.broadcast_to(np.asarray(space.high, np.float32), (self.action_dim,)).copy()
        else:
            raise ConfigError(
                f"env: {name} has action space {type(space).__name__}; accepted: Discrete, MultiDiscrete or Box "
                "action spaces"
            )

    def __repr__(self) -> str:
        return f"EnvAdapter({self.name}, obs_dim={self.obs_dim}, action_kind={self.action_kind})"

    def reset(self, key: jax.Array) -> tuple[jax.Array, Any]:
        """One environment: ``key -> (obs [obs_dim], env_state)``."""
        obs, state = self.env.reset(key, self.params)
        return self._flat(obs), state

    def step(self, key: jax.Array, state: Any, action: jax.Array, how: str = "clip"):
        """One environment step with automatic reset.

        ``how`` maps a continuous policy's action to the one the environment receives
        (:meth:`env_action`): ``"clip"``, ``"none"`` or ``"tanh"``.

        Returns:
            ``(obs, state, reward, terminated, truncated, final_obs)``: ``obs`` is the next
            observation (already reset when the episode ended), ``final_obs`` the one the
            step reached before any reset.
        """
        return self.step_with_info(key, state, action, how)[:6]

    def step_with_info(self, key: jax.Array, state: Any, action: jax.Array, how: str = "clip"):
        """:meth:`step`, and the environment's ``info`` dict (from the step before any reset) last."""
        action = self._env_action(self.env_action(action, how))
        obs, state, reward, terminated, truncated, info = self.env.step(key, state, action, self.params)
        info = info if isinstance(info, dict) else {}
        return (
            self._flat(obs),
            state,
            jnp.asarray(reward, jnp.float32),
            jnp.asarray(terminated, bool),
            jnp.asarray(truncated, bool),
            self._flat(info.get("final_observation", obs)),
            info,
        )

    def _flat(self, obs: Any) -> jax.Array:
        return jnp.reshape(jnp.asarray(obs, jnp.float32), (self.obs_dim,))

    flat = _flat  # the observation as the learner sees it: float32 [obs_dim]

    def reset_unflattened(self, key: jax.Array) -> tuple[Any, Any]:
        """One environment's reset in its own observation shape (the vector step flattens it)."""
        return self.env.reset(key, self.params)

    def prepare_action(self, action: jax.Array, how: str = "clip") -> jax.Array:
        """A policy's action as the environment takes it (:meth:`env_action`, then the space's dtype and shape)."""
        return self._env_action(self.env_action(action, how))

    def action_masks(self, states: Any) -> jax.Array | None:
        """The action masks ``[N, num_actions]`` of ``N`` states, or ``None`` where the environment has none."""
        return jax.vmap(self.action_mask)(states) if self.has_action_mask else None

    def env_action(self, action: jax.Array, how: str = "clip") -> jax.Array:
        """The action the environment receives for a policy's continuous ``action``: clipped to
        the bounds (``"clip"``), unchanged (``"none"``), or squashed into them,
        ``low + (tanh(u) + 1) (high - low) / 2`` (``"tanh"``). Discrete actions are unchanged."""
        if self.action_kind != "continuous" or how == "none":
            return action
        if how == "tanh":
            return self.action_low + (jnp.tanh(action) + 1.0) * (0.5 * (self.action_high - self.action_low))
        if how == "clip":
            return jnp.clip(action, self.action_low, self.action_high)
        raise ValueError(f"action mapping {how!r}; accepted: clip, none, tanh")

    def action_mask(self, state: Any) -> jax.Array:
        """``bool [num_actions]``: the discrete actions the environment allows in ``state`` (the one
        :meth:`reset` or :meth:`step` returned), from its ``action_mask(state, params)`` where it has one
        (Jumanji's tasks); all ``True`` otherwise. A multi-discrete space's mask has one entry per
        choice of each factor, laid out as the policy's logits. The learner applies it to the
        policy in acting, in the loss and in evaluation."""
        if self.action_kind == "continuous":
            raise ValueError(f"action_mask: {self.name} has continuous actions; accepted: a discrete action space")
        if hasattr(self.env, "action_mask"):
            return jnp.asarray(self.env.action_mask(state, self.params), bool)
        return jnp.ones((self.num_actions,), bool)

    def _env_action(self, action: jax.Array) -> jax.Array:
        if self.action_kind != "continuous":
            return jnp.asarray(action, jnp.int32)
        return jnp.reshape(action, self.action_shape) if self.action_shape else action[0]


def make_env(name: str) -> tuple[EnvAdapter, Any]:
    """``(env, env_params)`` for a registered environment name (cached per name)."""
    if not isinstance(name, str):
        raise ConfigError(f"env: got {name!r}; accepted: an environment name such as CartPole-v1")
    if name not in _ADAPTERS and is_brax(name):
        env = brax_envs.make(name)
        _ADAPTERS[name] = EnvAdapter(name, env, env.default_params)
    if name not in _ADAPTERS and suites.suite_of(name):
        _ADAPTERS[name] = EnvAdapter(name, *suites.make(name))
    if name not in _ADAPTERS and ":" in name:
        _ADAPTERS[name] = EnvAdapter(name, *from_factory(name))
    if name not in _ADAPTERS:
        if name not in gymnax.registered_envs:
            raise ConfigError(f"env: unknown environment {name!r}{suggest(name, known_envs())}; accepted: "
                              f"{accepted_envs()}")
        env, params = gymnax.make(name)
        _ADAPTERS[name] = EnvAdapter(name, env, params)
    adapter = _ADAPTERS[name]
    return adapter, adapter.params


def from_factory(name: str) -> tuple[environment.Environment, Any]:
    """``(env, env_params)`` from ``package.module:factory``: the factory, called with no arguments,
    returns a gymnax ``Environment`` or an ``(env, env_params)`` pair.

    Raises:
        ConfigError: in one line, for a module that does not import, a missing attribute, or a
            factory that fails or returns something else.
    """
    module_name, _, attr = name.partition(":")
    accepted = ("accepted: package.module:factory, where calling factory() returns a gymnax Environment or an "
                "(env, env_params) pair")
    if not module_name or not attr:
        raise ConfigError(f"env: got {name!r}; {accepted}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())  # a module beside the user, as `python -m` would find it
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - any failure of the user's module is reported in one line
        raise ConfigError(f"env: {name}: module {module_name} could not be imported ({type(e).__name__}: {e}); "
                          f"{accepted}") from None
    factory = module
    for part in attr.split("."):
        if not hasattr(factory, part):
            raise ConfigError(f"env: {name}: {module_name} has no attribute {attr!r}; {accepted}")
        factory = getattr(factory, part)
    if not callable(factory):
        raise ConfigError(f"env: {name}: {attr} is a {type(factory).__name__}, not callable; {accepted}")
    try:
        made = factory()
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"env: {name}: {attr}() failed ({type(e).__name__}: {e}); {accepted}") from None
    env, params = made if isinstance(made, tuple) and len(made) == 2 else (made, None)
    if not isinstance(env, environment.Environment):
        raise ConfigError(f"env: {name}: {attr}() returned {type(made).__name__}; {accepted}")
    params = env.default_params if params is None else params
    try:  # trace one reset and one step now, so a broken environment fails here in one line, not mid-compile
        key = jax.ShapeDtypeStruct((2,), jnp.uint32)
        obs, state = jax.eval_shape(env.reset, key, params)
        action = jax.eval_shape(env.action_space(params).sample, key)
        jax.eval_shape(env.step, key, state, action, params)
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"env: {name}: the environment's reset or step failed "
                          f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); {accepted}") from None
    return env, params
