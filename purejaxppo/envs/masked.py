"""Partially observed variants of gymnax tasks, for recurrent policies.

``CartPole-NoVelocity-v1``: gymnax's CartPole-v1 with the cart's velocity and the pole's angular
velocity removed from the observation (it sees ``[x, theta]``). A feed-forward policy cannot tell
which way the pole is moving; a recurrent one can infer it from successive observations.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from gymnax.environments import spaces
from gymnax.environments.classic_control.cartpole import CartPole


class CartPoleNoVelocity(CartPole):
    """CartPole-v1 observing position and angle only."""

    @property
    def name(self) -> str:
        return "CartPole-NoVelocity-v1"

    def get_obs(self, state: Any, params: Any = None, key: jax.Array | None = None) -> jax.Array:
        return jnp.array([state.x, state.theta])

    def observation_space(self, params: Any) -> spaces.Box:
        high = jnp.array([params.x_threshold * 2, params.theta_threshold_radians * 2])
        return spaces.Box(-high, high, (2,), jnp.float32)


def register_all(register) -> None:
    import gymnax

    if "CartPole-NoVelocity-v1" not in gymnax.registered_envs:
        register("CartPole-NoVelocity-v1", CartPoleNoVelocity)
