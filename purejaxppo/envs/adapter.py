"""The adapter: any gymnax environment by name, seen as flat observations and one action space.

Brax's tasks are named ``brax/<task>`` or ``brax/<task>-<backend>`` (:mod:`purejaxppo.envs.brax_envs`).

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
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
from gymnax.environments import spaces

from purejaxppo.envs import brax_envs
from purejaxppo.errors import ConfigError
from purejaxppo.naming import is_brax, suggest

_ADAPTERS: dict[str, EnvAdapter] = {}


def register_env(name: str, factory: Callable[..., Any]) -> None:
    """Register a gymnax-API environment class or factory under ``name``."""
    if not isinstance(name, str) or not name or is_brax(name):
        raise ConfigError(f"register_env: got the name {name!r}; accepted: a non-empty string that does not start "
                          "with brax/ (those are Brax's tasks)")
    if not callable(factory):
        raise ConfigError(f"register_env: got {factory!r} for {name}; accepted: a gymnax Environment class, or a "
                          "function that returns an instance")
    if name in gymnax.registered_envs:
        raise ConfigError(f"register_env: {name} is already registered; accepted: a new name")
    gymnax.registration.register(name, factory)


def known_envs() -> list[str]:
    """Every environment name ``make_env`` accepts (the Brax ones need the ``brax`` extra)."""
    return list(gymnax.registered_envs) + brax_envs.names()


def accepted_envs() -> str:
    """The accepted names in a few words: every gymnax name, and the Brax ones by pattern."""
    return (f"{', '.join(gymnax.registered_envs)}, or {brax_envs.PREFIX}TASK[-BACKEND] with TASK one of "
            f"{', '.join(brax_envs.TASKS)} and BACKEND one of {', '.join(brax_envs.BACKENDS)} (default "
            f"{brax_envs.DEFAULT_BACKEND}; `purejaxppo envs` lists every name)")


class EnvAdapter:
    """A gymnax environment seen as flat float observations and a single action space.

    Attributes:
        name: registered name.
        obs_dim: length of the flattened observation.
        action_kind: ``"discrete"`` or ``"continuous"``.
        num_actions: number of discrete actions (discrete only).
        action_dim: length of the action vector (continuous only).
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
        if isinstance(space, spaces.Discrete):
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
                f"env: {name} has action space {type(space).__name__}; accepted: Discrete or Box action spaces"
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

    def env_action(self, action: jax.Array, how: str = "clip") -> jax.Array:
        """The action the environment receives for a policy's continuous ``action``: clipped to
        the bounds (``"clip"``), unchanged (``"none"``), or squashed into them,
        ``low + (tanh(u) + 1) (high - low) / 2`` (``"tanh"``). Discrete actions are unchanged."""
        if self.action_kind == "discrete" or how == "none":
            return action
        if how == "tanh":
            return self.action_low + (jnp.tanh(action) + 1.0) * (0.5 * (self.action_high - self.action_low))
        if how == "clip":
            return jnp.clip(action, self.action_low, self.action_high)
        raise ValueError(f"action mapping {how!r}; accepted: clip, none, tanh")

    def _env_action(self, action: jax.Array) -> jax.Array:
        if self.action_kind == "discrete":
            return jnp.asarray(action, jnp.int32)
        return jnp.reshape(action, self.action_shape) if self.action_shape else action[0]


def make_env(name: str) -> tuple[EnvAdapter, Any]:
    """``(env, env_params)`` for a registered environment name (cached per name)."""
    if not isinstance(name, str):
        raise ConfigError(f"env: got {name!r}; accepted: an environment name such as CartPole-v1")
    if name not in _ADAPTERS and is_brax(name):
        env = brax_envs.make(name)
        _ADAPTERS[name] = EnvAdapter(name, env, env.default_params)
    if name not in _ADAPTERS:
        if name not in gymnax.registered_envs:
            raise ConfigError(f"env: unknown environment {name!r}{suggest(name, known_envs())}; accepted: "
                              f"{accepted_envs()}")
        env, params = gymnax.make(name)
        _ADAPTERS[name] = EnvAdapter(name, env, params)
    adapter = _ADAPTERS[name]
    return adapter, adapter.params

