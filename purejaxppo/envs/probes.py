"""Probe environments: tiny problems that each test one part of the learner.

Each has a known optimal value function or policy, so a failure points at the part
that is broken (after Andy Jones' "debugging RL" probes):

* ``Probe-Constant``: one step, observation 0, reward 1. The critic must learn V = 1.
* ``Probe-ObsReward``: one step, observation +-1 at random, reward = observation.
  The critic must learn V(o) = o (it has to read its input).
* ``Probe-TwoStep``: two steps, observations 0 then 1, reward 1 only at the end.
  The critic must learn V(0) = gamma, V(1) = 1 (discounting works).
* ``Probe-ActionReward``: one step, observation 0; discrete: reward 1 for action 1,
  0 for action 0; continuous: reward 1 - (a - 0.5)^2. The actor must learn the best action.
* ``Probe-TimeLimit``: reward 1 every step, never terminates, truncated after 5 steps,
  observation constant. With truncation bootstrapping V = 1 / (1 - gamma) everywhere;
  treating truncation as termination gives a smaller value.

Every probe exists with discrete actions and with a continuous ``-Continuous`` twin
(one action in [-1, 1]).

* ``Probe-MaskedFactors``: one step, observation 0, a multi-discrete action of two factors
  with three choices each and an action mask that rules out choice 0 in both. Each factor
  pays 1 for choice 0, 0.5 for choice 2, 0 for choice 1: the best allowed action is (2, 2)
  (return 1), the forbidden one (0, 0) would pay 2. The learner must factor its policy and
  respect the mask in acting and in the loss.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces


@struct.dataclass
class ProbeState(environment.EnvState):
    obs: jax.Array
    time: int


@struct.dataclass
class ProbeParams(environment.EnvParams):
    max_steps_in_episode: int = 1_000_000


class _Probe(environment.Environment):
    kind = "constant"
    episode_steps = 1

    def __init__(self, continuous: bool = False):
        super().__init__()
        self.continuous = continuous

    @property
    def default_params(self) -> ProbeParams:
        if self.kind == "timelimit":
            return ProbeParams(max_steps_in_episode=5)
        return ProbeParams()

    @property
    def name(self) -> str:
        return f"Probe-{self.kind}"

    @property
    def num_actions(self) -> int:
        return 2

    def action_space(self, params: Any = None):
        if self.continuous:
            return spaces.Box(-1.0, 1.0, (1,), jnp.float32)
        return spaces.Discrete(2)

    def observation_space(self, params: Any) -> spaces.Box:
        return spaces.Box(-1.0, 1.0, (1,), jnp.float32)

    def reset_env(self, key: jax.Array, params: Any):
        if self.kind == "obsreward":
            obs = jnp.where(jax.random.bernoulli(key), 1.0, -1.0)
        else:
            obs = jnp.array(0.0)
        state = ProbeState(obs=obs, time=0)
        return jnp.reshape(obs, (1,)), state

    def _action_reward(self, action: jax.Array) -> jax.Array:
        if self.continuous:
            a = jnp.reshape(action, ())
            return 1.0 - (a - 0.5) ** 2
        return jnp.where(action == 1, 1.0, 0.0)

    def step_env(self, key: jax.Array, state: ProbeState, action: Any, params: Any):
        time = state.time + 1
        if self.kind == "constant":
            reward, terminated, obs = jnp.array(1.0), jnp.array(True), state.obs
        elif self.kind == "obsreward":
            reward, terminated, obs = state.obs, jnp.array(True), state.obs
        elif self.kind == "twostep":
            terminated = time >= 2
            reward = jnp.where(terminated, 1.0, 0.0)
            obs = jnp.array(1.0)
        elif self.kind == "actionreward":
            reward, terminated, obs = self._action_reward(action), jnp.array(True), state.obs
        elif self.kind == "timelimit":
            reward, terminated, obs = jnp.array(1.0), jnp.array(False), state.obs
        else:  # pragma: no cover - guarded by construction
            raise ValueError(self.kind)
        new_state = ProbeState(obs=obs, time=time)
        return jnp.reshape(obs, (1,)), new_state, reward.astype(jnp.float32), terminated, {}


class MaskedFactorsProbe(environment.Environment):
    """``Probe-MaskedFactors`` (see the module's docstring)."""

    NVEC = (3, 3)
    PAY = jnp.array([1.0, 0.0, 0.5])  # per factor, by choice
    ALLOWED = jnp.array([False, True, True])  # per factor, by choice

    @property
    def default_params(self) -> ProbeParams:
        return ProbeParams()

    @property
    def name(self) -> str:
        return "Probe-MaskedFactors"

    def action_space(self, params: Any = None):
        from purejaxppo.envs.adapter import MultiDiscrete

        return MultiDiscrete(self.NVEC)

    def observation_space(self, params: Any) -> spaces.Box:
        return spaces.Box(-1.0, 1.0, (1,), jnp.float32)

    def action_mask(self, state: ProbeState, params: Any) -> jax.Array:
        """``bool [6]``: each factor's allowed choices, laid out as the policy's logits."""
        return jnp.tile(self.ALLOWED, len(self.NVEC))

    def reset_env(self, key: jax.Array, params: Any):
        return jnp.zeros((1,)), ProbeState(obs=jnp.array(0.0), time=0)

    def step_env(self, key: jax.Array, state: ProbeState, action: Any, params: Any):
        reward = jnp.sum(self.PAY[jnp.asarray(action, jnp.int32)])
        return jnp.zeros((1,)), ProbeState(obs=state.obs, time=state.time + 1), reward, jnp.array(True), {}


def _make_class(kind: str) -> type:
    return type(f"Probe{kind.title()}", (_Probe,), {"kind": kind})


PROBES = {
    "Probe-Constant": _make_class("constant"),
    "Probe-ObsReward": _make_class("obsreward"),
    "Probe-TwoStep": _make_class("twostep"),
    "Probe-ActionReward": _make_class("actionreward"),
    "Probe-TimeLimit": _make_class("timelimit"),
}


def register_all(register) -> None:
    import gymnax

    for name, cls in PROBES.items():
        for suffix, continuous in (("", False), ("-Continuous", True)):
            full = name + suffix
            if full not in gymnax.registered_envs:
                register(full, lambda cls=cls, continuous=continuous: cls(continuous=continuous))
    if "Probe-MaskedFactors" not in gymnax.registered_envs:
        register("Probe-MaskedFactors", MaskedFactorsProbe)
