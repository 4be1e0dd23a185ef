"""A program layout (:class:`~purejaxppo.core.tuning.Tuning`) resolved once into functions.

The stages of an update call these functions and never read a layout choice themselves:
``layout.permute(key, n)`` shuffles without knowing which shuffle it got, and so on. Every
choice gives the same algorithm (see :mod:`purejaxppo.core.tuning`); only the program differs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from purejaxppo.core.networks import CONVS, dense_layers
from purejaxppo.core.shuffle import feistel_permutation, permutation
from purejaxppo.core.tuning import Tuning

Value = Callable[[jax.Array], jax.Array]  # V of raw observations [..., obs_dim] -> [...]


class Truncation(NamedTuple):
    """Where V(final observation) of a time-limited episode is computed.

    ``in_rollout(value, truncated [N], final_obs [N, D]) -> (final_value [N] or None, final_obs or None)``
    runs at every rollout step: it returns the value (and drops the observation), or keeps the
    observation for ``after_rollout(value, truncated [T, N], final_obs [T, N, D]) -> [T, N]``,
    which runs in the batch pass when the rollout left the value to it.
    """

    in_rollout: Callable[[Value, jax.Array, jax.Array], tuple[Any, Any]]
    after_rollout: Callable[[Value, jax.Array, jax.Array], jax.Array]


class EpisodeSums(NamedTuple):
    """Where the finished episodes' sums are added: ``zeros(n)`` is the sum's shape (``[]`` each
    step, or ``[N]`` per environment), ``total(x)`` reduces it after the rollout."""

    zeros: Callable[[int], Any]
    total: Callable[[Any], Any]


class Layout(NamedTuple):
    """The resolved layout: what the stages call."""

    permute: Callable[[jax.Array, int], jax.Array]  # (key, n) -> a permutation of range(n), int32 [n]
    feed: Callable  # (step, batch, order [M, b]) -> (body, xs) for the minibatch scan
    skip_stopped: Callable  # (stopped, skip, run, *args) -> the epoch's results after a target-KL stop
    truncation: Truncation
    episode_sums: EpisodeSums
    dot_general: Any  # the dense layers' dot_general (None: JAX's own), in a MixedPrecision for bfloat16
    conv: Any  # the convolution layers' conv_general_dilated (None: JAX's own)
    rollout_unroll: int
    gae_unroll: int
    minibatch_unroll: int


# --- the shuffle ------------------------------------------------------------------------------

SHUFFLES = {"packed": permutation, "feistel": feistel_permutation, "sort": jax.random.permutation}


# --- how the minibatches read the shuffled batch ------------------------------------------------

def feed_whole_epoch(step, batch, order):
    """The shuffled batch made whole before the steps: each step reads its minibatch."""
    return step, jax.tree_util.tree_map(lambda x: x[order], batch)


def feed_rows(step, batch, order):
    """Each step gathers its own rows (no shuffled copy of the batch)."""

    def body(carry, rows):
        return step(carry, jax.tree_util.tree_map(lambda x: x[rows], batch))

    return body, order


FEEDS = {"epoch": feed_whole_epoch, "minibatch": feed_rows}


# --- epochs after a target-KL stop ------------------------------------------------------------

def skip_by_branch(stopped, skip, run, *args):
    """An epoch after the stop does no work (a ``lax.cond``)."""
    return jax.lax.cond(stopped, skip, run, *args)


def skip_by_select(stopped, skip, run, *args):
    """The epoch runs and its results are dropped: no conditional in the program."""
    ran = run(*args)
    return jax.tree_util.tree_map(lambda kept, new: jnp.where(stopped, kept, new), skip(*args), ran)


SKIPS = {"branch": skip_by_branch, "select": skip_by_select}


# --- the truncation value ---------------------------------------------------------------------

def value_in_branch(value: Value, truncated: jax.Array, final_obs: jax.Array):
    """The critic runs inside the rollout, only on steps where some environment was truncated."""
    zeros = jnp.zeros(truncated.shape, jnp.float32)
    return jax.lax.cond(jnp.any(truncated), value, lambda o: zeros, final_obs), None


def keep_final_obs(value: Value, truncated: jax.Array, final_obs: jax.Array):
    """The final observations stay in the trajectory, valued after the rollout."""
    return None, final_obs


def value_every_row(value: Value, truncated: jax.Array, final_obs: jax.Array) -> jax.Array:
    """Every final observation valued in the batched pass (no branch)."""
    return value(final_obs)


def value_truncated_rows(value: Value, truncated: jax.Array, final_obs: jax.Array) -> jax.Array:
    """``value(final_obs)`` where ``truncated`` (``[T, N]``), 0 elsewhere, valuing only the truncated rows.

    The truncated rows are valued ``N`` at a time, as many times as there are truncations: with
    time limits longer than the rollout that is once per update, ``N`` rows instead of
    ``T * N``, and any number of truncations stays exact. The k-th truncated row is found by a
    binary search in the running count of truncations (no scatter over the trajectory). Under
    ``vmap`` (sweeps) the loop runs as often as the most truncated member needs.
    """
    shape, rows = truncated.shape, truncated.size
    width = shape[-1]  # rows valued per pass
    flat_obs = final_obs.reshape((rows,) + final_obs.shape[len(shape):])
    running = jnp.cumsum(truncated.reshape(-1).astype(jnp.int32))  # truncations up to and including each row
    count = running[-1]

    def chunk(carry):
        start, out = carry
        wanted = start + 1 + jnp.arange(width, dtype=jnp.int32)  # the (start+1)-th ... truncations
        picked = jnp.searchsorted(running, wanted, side="left", method="scan_unrolled").astype(jnp.int32)
        v = value(flat_obs[jnp.minimum(picked, rows - 1)])
        return start + width, out.at[picked].set(v, mode="drop")  # rows past the last truncation are dropped

    _, out = jax.lax.while_loop(lambda c: c[0] < count, chunk, (jnp.int32(0), jnp.zeros((rows,), jnp.float32)))
    return out.reshape(shape)


def no_value(value: Value, truncated: jax.Array, final_obs: jax.Array):
    """Truncations treated as terminations (``bootstrap_truncation`` off): nothing is valued."""
    return jnp.zeros(truncated.shape, jnp.float32), None


def _never_asked(value, truncated, final_obs):
    raise AssertionError("the rollout computed the truncation value")


TRUNCATIONS = {
    "branch": Truncation(value_in_branch, _never_asked),
    "batched": Truncation(keep_final_obs, value_every_row),
    "compact": Truncation(keep_final_obs, value_truncated_rows),
}
NO_BOOTSTRAP = Truncation(no_value, _never_asked)


# --- the finished episodes' sums --------------------------------------------------------------

EPISODE_SUMS = {
    "step": EpisodeSums(lambda n: (), lambda x: x),
    "env": EpisodeSums(lambda n: (n,), jnp.sum),
}


def make_layout(tuning: Tuning, bootstrap_truncation: bool = True) -> Layout:
    """Resolve every choice of ``tuning`` into the function the stages call; without
    ``bootstrap_truncation`` no truncation value is computed, whatever the layout."""
    return Layout(
        permute=SHUFFLES[tuning.shuffle],
        feed=FEEDS[tuning.gather],
        skip_stopped=SKIPS[tuning.early_stop],
        truncation=TRUNCATIONS[tuning.truncation] if bootstrap_truncation else NO_BOOTSTRAP,
        episode_sums=EPISODE_SUMS[tuning.episode_stats],
        dot_general=dense_layers(tuning.weight_grad, tuning.precision),
        conv=CONVS[tuning.conv],
        rollout_unroll=tuning.rollout_unroll,
        gae_unroll=tuning.gae_unroll,
        minibatch_unroll=tuning.minibatch_unroll,
    )
