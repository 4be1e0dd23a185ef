"""The epoch shuffle: a permutation, the documented composite-key order, and uniform."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxppo.core.shuffle import (
    FEISTEL_MIN_ROWS,
    feistel_permutation,
    index_bits,
    packed_rounds,
    permutation,
    round_keys,
)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 512, 1000, 8192, 10_000])
def test_is_a_permutation(n):
    perm = np.asarray(jax.jit(permutation, static_argnums=1)(jax.random.key(n), n))
    assert perm.dtype == np.int32 and perm.shape == (n,)
    np.testing.assert_array_equal(np.sort(perm), np.arange(n))


@pytest.mark.parametrize("n", [5, 1000, 8192])
def test_order_is_lexicographic_in_the_composite_keys(n):
    """Reference: give every row its random bits of each round (round r's bits belong to
    the row's position after round r - 1) and sort rows by (k_R, ..., k_1, index) with
    NumPy's lexsort; the packed sorts must give exactly that order."""
    key = jax.random.key(123)
    b = index_bits(n)
    highs = [np.asarray(h) >> b for h in round_keys(key, n)]
    position = np.arange(n)  # position of every row after the rounds so far
    row_keys = []
    for high in highs:
        row_keys.append(high[position])
        order = np.lexsort([np.arange(n)] + row_keys)  # last key is the most significant
        position = np.empty(n, np.int64)
        position[order] = np.arange(n)
    np.testing.assert_array_equal(np.asarray(permutation(key, n)), order)


def test_rounds_give_at_least_three_log2_n_random_bits():
    for n in [2, 100, 8192, 2**18, 2**20, 2**24]:
        b = index_bits(n)
        assert 2 ** (b - 1) < n <= 2**b or n == 2
        assert packed_rounds(n) * (32 - b) >= 3 * math.log2(n)
    assert packed_rounds(8192) == 3
    assert packed_rounds(2**24 + 1) is None  # falls back to jax.random.permutation


def test_every_ordering_of_four_rows_is_equally_likely():
    keys = jax.random.split(jax.random.key(7), 48_000)
    perms = np.asarray(jax.jit(jax.vmap(lambda k: permutation(k, 4)))(keys))
    index = {p: i for i, p in enumerate(itertools.permutations(range(4)))}
    counts = np.bincount([index[tuple(p)] for p in perms], minlength=24)
    expected = len(perms) / 24
    chi2 = float(np.sum((counts - expected) ** 2 / expected))
    assert chi2 < 55.0, (chi2, counts)  # 23 degrees of freedom: p < 2e-4 to fail by chance


def test_positions_of_a_large_batch_are_uniform():
    """Where rows 0 and n-1 land, over many shuffles of a PPO-sized batch: uniform over
    16 bins (a bias from shared keys would show as the identity order surviving)."""
    n, draws = 8192, 2048
    perms = jax.jit(jax.vmap(lambda k: permutation(k, n)))(jax.random.split(jax.random.key(3), draws))
    where = np.asarray(jnp.argsort(perms, axis=1))[:, [0, n - 1]]
    for column in where.T:
        counts = np.bincount(column * 16 // n, minlength=16)
        chi2 = float(np.sum((counts - draws / 16) ** 2 / (draws / 16)))
        assert chi2 < 40.0, counts  # 15 degrees of freedom
    fixed_points = float(np.mean(np.asarray(perms) == np.arange(n)))
    assert fixed_points < 5.0 / n


# ---- the Feistel shuffle: a bijection, and PPO's statistics of a uniform shuffle ---------------


@pytest.mark.parametrize("n", [1, 255, 256, 300, 512, 1000, 8192, 10_000, 2**16 + 3])
def test_feistel_is_a_permutation(n):
    perm = np.asarray(jax.jit(feistel_permutation, static_argnums=1)(jax.random.key(n), n))
    assert perm.dtype == np.int32 and perm.shape == (n,)
    np.testing.assert_array_equal(np.sort(perm), np.arange(n))


def test_feistel_depends_on_the_key_only():
    a, b = (np.asarray(feistel_permutation(jax.random.key(k), 8192)) for k in (1, 2))
    np.testing.assert_array_equal(a, np.asarray(feistel_permutation(jax.random.key(1), 8192)))
    assert np.mean(a == b) < 0.01
    # below FEISTEL_MIN_ROWS it is the exactly uniform packed sort
    np.testing.assert_array_equal(np.asarray(feistel_permutation(jax.random.key(3), FEISTEL_MIN_ROWS - 1)),
                                  np.asarray(permutation(jax.random.key(3), FEISTEL_MIN_ROWS - 1)))


@pytest.mark.parametrize("n", [512, 8192, 5000])  # 4 and 64 envs x 128 steps; and not a power of two
def test_feistel_has_the_statistics_of_a_uniform_shuffle(n):
    """Over 3,000 keys, against the exact values for a uniform random permutation: how often
    rows d apart (d = 1, 2, 3, 64, n/2) fall in the same of 4 minibatches, how often the first
    comes first, where row 0 lands (16 bins), and the mean number of fixed points (1)."""
    draws, m = 3000, 4
    gaps = (1, 2, 3, 64, n // 2)

    def statistics(key):
        perm = feistel_permutation(key, n)
        place = jnp.zeros((n,), jnp.int32).at[perm].set(jnp.arange(n, dtype=jnp.int32))  # where each row went
        minibatch = place * m // n
        out = []
        for d in gaps:
            i = jnp.arange(n - d)
            out += [jnp.mean(minibatch[i] == minibatch[i + d]), jnp.mean(place[i] < place[i + d])]
        return jnp.stack(out), jnp.sum(perm == jnp.arange(n)), place[0] * 16 // n

    stats, fixed, bins = (np.asarray(x) for x in jax.jit(lambda ks: jax.lax.map(statistics, ks))(
        jax.random.split(jax.random.key(11), draws)))
    same = sum(((n * k // m) - (n * (k - 1) // m)) * ((n * k // m) - (n * (k - 1) // m) - 1)
               for k in range(1, m + 1)) / (n * (n - 1))  # chance two given rows share a minibatch
    expected = np.array([same, 0.5] * len(gaps))
    z = (stats.mean(0) - expected) / (stats.std(0) / np.sqrt(draws))
    assert np.abs(z).max() < 4.5, z  # 10 statistics: a uniform shuffle fails this with chance < 1e-4
    assert abs(fixed.mean() - 1.0) < 4.5 * fixed.std() / np.sqrt(draws), fixed.mean()
    counts = np.bincount(bins, minlength=16)
    assert float(np.sum((counts - draws / 16) ** 2 / (draws / 16))) < 40.0, counts  # 15 degrees of freedom
