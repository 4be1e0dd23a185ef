"""The action distributions, as small pure functions of their parameters.

Nothing but arrays crosses ``jit``/``vmap`` boundaries: a policy's output (logits, or a
Gaussian's mean and log standard deviation) is the distribution.

``entropy(params, action)`` takes the sampled action too: the categorical and Gaussian
entropies are exact and ignore it; the tanh-squashed Gaussian has no closed form and
estimates it from the action (see :class:`TanhGaussian`).
"""

from __future__ import annotations

import itertools
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
    def entropy(logits: jax.Array, action: jax.Array | None = None) -> jax.Array:
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
    def entropy(params, action: jax.Array | None = None) -> jax.Array:
        """sum_d [ log sigma_d + (1 + log(2 pi)) / 2 ]."""
        _, log_std = params
        return jnp.sum(log_std + 0.5 * (1.0 + _LOG_2PI), axis=-1)


def tanh_log_det(u: jax.Array) -> jax.Array:
    """``sum_d log(1 - tanh(u_d)^2)``, computed as ``2 (log 2 - u - softplus(-2u))`` (exact, stable for large |u|)."""
    return jnp.sum(2.0 * (math.log(2.0) - u - jax.nn.softplus(-2.0 * u)), axis=-1)


class TanhGaussian(NamedTuple):
    """A diagonal Gaussian squashed by tanh into the action bounds: ``a = tanh(u)`` in ``[-1, 1]^D``,
    then scaled to ``[low, high]`` on the way into the environment (``EnvAdapter.env_action``).

    The action a rollout stores is the *unsquashed* draw ``u``: the squashed action is a
    function of it, so nothing is lost, and no ``atanh`` of a value rounded to +-1 is ever
    taken. ``log_prob`` is the density of the squashed action,
    ``log N(u; mu, sigma) - sum_d log(1 - tanh(u_d)^2)`` (the affine scaling to the bounds adds
    a constant, left out). The Jacobian term depends on ``u`` only, so it cancels in PPO's
    ratio, which equals the Gaussian one exactly; it matters for the entropy.

    The entropy has no closed form. ``entropy(params, u)`` is ``H[N(mu, sigma)] + E[sum_d
    log(1 - tanh(u_d)^2)]`` with the expectation estimated at one reparameterised draw
    ``u = mu + sigma * eps``, ``eps`` being the stored draw standardised (held constant):
    gradients reach ``mu`` and ``sigma`` through the squashing term, as with Brax's estimate
    from a fresh draw, and no key is needed in the loss. (``-log_prob`` at a fixed ``u`` would
    not do: its gradient is a score, zero in expectation.)
    """

    @staticmethod
    def sample(key: jax.Array, params) -> jax.Array:
        return DiagGaussian.sample(key, params)

    @staticmethod
    def mode(params) -> jax.Array:
        """The Gaussian mean: its tanh is the squashed distribution's median."""
        return params[0]

    @staticmethod
    def log_prob(params, action: jax.Array) -> jax.Array:
        return DiagGaussian.log_prob(params, action) - tanh_log_det(action)

    @staticmethod
    def entropy(params, action: jax.Array | None = None) -> jax.Array:
        mean, log_std = params
        if action is None:
            raise ValueError("TanhGaussian.entropy estimates from a sampled (unsquashed) action; pass it")
        eps = jax.lax.stop_gradient((action - mean) * jnp.exp(-log_std))
        return DiagGaussian.entropy(params) + tanh_log_det(mean + jnp.exp(log_std) * eps)


class FactoredCategorical(NamedTuple):
    """Independent categoricals, one per factor of a multi-discrete action space (factor ``i`` has
    ``nvec[i]`` choices), from logits ``[..., sum(nvec)]`` (each factor's logits in turn); actions
    are int32 ``[..., len(nvec)]``. The log-probability and the entropy are the factors' sums."""

    nvec: tuple[int, ...]

    def split(self, logits: jax.Array) -> list[jax.Array]:
        """Each factor's logits ``[..., nvec[i]]``."""
        assert logits.shape[-1] == sum(self.nvec), (logits.shape, self.nvec)
        return jnp.split(logits, list(itertools.accumulate(self.nvec))[:-1], axis=-1)

    def sample(self, key: jax.Array, logits: jax.Array) -> jax.Array:
        keys = jax.random.split(key, len(self.nvec))
        return jnp.stack([Categorical.sample(k, x) for k, x in zip(keys, self.split(logits))], axis=-1)

    def mode(self, logits: jax.Array) -> jax.Array:
        return jnp.stack([Categorical.mode(x) for x in self.split(logits)], axis=-1)

    def log_prob(self, logits: jax.Array, action: jax.Array) -> jax.Array:
        return sum(Categorical.log_prob(x, action[..., i]) for i, x in enumerate(self.split(logits)))

    def entropy(self, logits: jax.Array, action: jax.Array | None = None) -> jax.Array:
        return sum(Categorical.entropy(x) for x in self.split(logits))


MASKED_LOGIT = -1e9  # a ruled-out action's logit: probability 0 and a finite log-probability, so entropies stay finite


def mask_logits(logits: jax.Array, mask: jax.Array | None) -> jax.Array:
    """``logits`` with the actions ``mask`` rules out (``False``) set to :data:`MASKED_LOGIT`; ``mask``
    has the logits' shape (a multi-discrete space's per-factor masks laid out as its logits).
    No mask: the logits unchanged."""
    if mask is None:
        return logits
    assert mask.shape == logits.shape, (mask.shape, logits.shape)
    return jnp.where(mask, logits, MASKED_LOGIT)


def distribution(action_kind: str, squash: bool = False, nvec: tuple[int, ...] = ()):
    """The distribution of an action space: a categorical (``"discrete"``), independent categoricals
    (``"multi_discrete"``, ``nvec`` choices per factor), or a diagonal Gaussian (``"continuous"``,
    tanh-squashed with ``squash``)."""
    if action_kind == "discrete":
        return Categorical
    if action_kind == "multi_discrete":
        return FactoredCategorical(tuple(nvec))
    return TanhGaussian if squash else DiagGaussian
