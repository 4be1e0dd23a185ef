"""Running mean and variance, in the ``(init, update)`` shape of optax transforms.

Used for observation normalisation and for reward scaling; the state lives in the
compiled training state, so normalisation costs no host round trip.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class RunningMeanStd(NamedTuple):
    mean: jax.Array  # [D] (or [] for scalars)
    var: jax.Array  # [D]
    count: jax.Array  # []


def rms_init(shape: tuple[int, ...] = ()) -> RunningMeanStd:
    # count starts at a tiny epsilon so the first update takes the batch's moments.
    return RunningMeanStd(jnp.zeros(shape, jnp.float32), jnp.ones(shape, jnp.float32), jnp.asarray(1e-4, jnp.float32))


def rms_update(rms: RunningMeanStd, batch: jax.Array) -> RunningMeanStd:
    """Merge the moments of ``batch`` ``[B, *shape]`` (Chan et al.'s parallel algorithm)."""
    batch = batch.reshape((-1,) + rms.mean.shape)
    b_mean = jnp.mean(batch, axis=0)
    b_var = jnp.var(batch, axis=0)
    b_count = jnp.asarray(batch.shape[0], jnp.float32)
    delta = b_mean - rms.mean
    total = rms.count + b_count
    mean = rms.mean + delta * b_count / total
    m2 = rms.var * rms.count + b_var * b_count + delta**2 * rms.count * b_count / total
    return RunningMeanStd(mean, m2 / total, total)


def rms_normalize(rms: RunningMeanStd, x: jax.Array, clip: jax.Array | float, eps: float = 1e-8) -> jax.Array:
    return jnp.clip((x - rms.mean) / jnp.sqrt(rms.var + eps), -clip, clip)
