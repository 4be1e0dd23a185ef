"""The two action distributions, as small pure functions of their parameters.

Nothing but arrays crosses ``jit``/``vmap`` boundaries: a policy's output (logits, or a
Gaussian's mean and log standard deviation) is the distribution.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

_LOG_2PI = math.log(2.0 * math.pi)


class Categorical(NamedTuple):
    """Categorical over ``A`` actions from logits ``[..., A]``; actions are int32 ``[...]``."""

    @staticmethod
    def sample(key: jax.Array, logits: jax.Array) -> jax.Array:
        return jax.random.categorical(key, logits).astype(jnp.int32)

    @staticmethod
    def mode(logits: jax.Array) -> jax.Array:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)

    @staticmethod
    def log_prob(logits: jax.Array, action: jax.Array) -> jax.Array:
        logp = jax.nn.log_softmax(logits)
        return jnp.take_along_axis(logp, action[..., None].astype(jnp.int32), axis=-1)[..., 0]

    @staticmethod
    def entropy(logits: jax.Array) -> jax.Array:
        logp = jax.nn.log_softmax(logits)
        return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


class DiagGaussian(NamedTuple):
    """Diagonal Gaussian from ``(mean, log_std)``, each ``[..., D]``; actions ``[..., D]``."""

    @staticmethod
    def sample(key: jax.Array, params) -> jax.Array:
        mean, log_std = params
        return mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape, mean.dtype)

    @staticmethod
    def mode(params) -> jax.Array:
        return params[0]

    @staticmethod
    def log_prob(params, action: jax.Array) -> jax.Array:
        """sum_d [ -(a_d - mu_d)^2 / (2 sigma_d^2) - log sigma_d - log(2 pi) / 2 ]."""
        mean, log_std = params
        z = (action - mean) * jnp.exp(-log_std)
        return jnp.sum(-0.5 * z * z - log_std - 0.5 * _LOG_2PI, axis=-1)

    @staticmethod
    def entropy(params) -> jax.Array:
        """sum_d [ log sigma_d + (1 + log(2 pi)) / 2 ]."""
        _, log_std = params
        return jnp.sum(log_std + 0.5 * (1.0 + _LOG_2PI), axis=-1)


def distribution(continuous: bool):
    """The distribution class of a continuous (diagonal Gaussian) or discrete (categorical) action space."""
    return DiagGaussian if continuous else Categorical
