"""A user's own environment for ``--env my_env:make`` (tests/test_suites.py): no registration.

Guess the sign: the observation is a random +1 or -1, action 1 is right when it is +1 and action 0
when it is -1 (reward 1, else 0); an episode lasts 8 steps (a time limit, a truncation).
"""

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces


@struct.dataclass
class SignState(environment.EnvState):
    sign: jax.Array


@struct.dataclass
class SignParams(environment.EnvParams):
    max_steps_in_episode: int = 8


class GuessTheSign(environment.Environment):
    @property
    def default_params(self) -> SignParams:
        return SignParams()

    def _draw(self, key, time):
        sign = jnp.where(jax.random.bernoulli(key), 1.0, -1.0)
        return sign[None], SignState(time=time, sign=sign)

    def reset_env(self, key, params):
        return self._draw(key, jnp.zeros((), jnp.int32))

    def step_env(self, key, state, action, params):
        reward = jnp.where((action == 1) == (state.sign > 0), 1.0, 0.0)
        obs, state = self._draw(key, state.time + 1)
        return obs, state, reward, jnp.zeros((), bool), {}

    def action_space(self, params=None):
        return spaces.Discrete(2)

    def observation_space(self, params):
        return spaces.Box(-1.0, 1.0, (1,), jnp.float32)


def make():
    return GuessTheSign()


def make_pair():
    return GuessTheSign(), SignParams(max_steps_in_episode=4)


def not_an_env():
    return 42


def broken():
    raise RuntimeError("no such level")


class BadStep(GuessTheSign):
    def step_env(self, key, state, action, params):
        return jnp.zeros((3, 3)) @ jnp.zeros((2,)), state, 0.0, False, {}


def bad_step():
    return BadStep()


NOT_CALLABLE = 3
