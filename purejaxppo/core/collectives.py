"""Cross-device operations, injected into the training program.

The training stages call these four operations where data parallelism needs them; the
default :data:`LOCAL` is the identity, so the one-device program contains no collective at
all. :mod:`purejaxppo.scale.parallel` supplies the implementation over a mesh axis.
"""

from __future__ import annotations

import jax


class Collectives:
    """One device: every operation is the identity and there is one shard."""

    num_shards: int = 1

    def own(self, x: jax.Array, axis: int = 0) -> jax.Array:
        """This device's equal share of ``x`` along ``axis`` (environments or batch rows)."""
        return x

    def gather(self, x: jax.Array, axis: int = 0) -> jax.Array:
        """Every device's share of ``x`` concatenated along ``axis`` (the inverse of :meth:`own`)."""
        return x

    def sum(self, x):
        """The sum of ``x`` over devices."""
        return x

    def mean(self, x):
        """The mean of ``x`` over devices."""
        return x


LOCAL = Collectives()
