"""GAE against a plain NumPy loop and against hand-worked numbers."""

import jax.numpy as jnp
import numpy as np
import pytest

from purejaxppo.core.gae import gae_advantages


def gae_numpy(rewards, values, next_values, terminated, truncated, gamma, lam):
    """Reference: one environment at a time, one step at a time, written from the paper."""
    T, N = rewards.shape
    adv = np.zeros((T, N))
    for n in range(N):
        running = 0.0
        for t in reversed(range(T)):
            if terminated[t, n]:
                bootstrap = 0.0
            else:
                bootstrap = next_values[t, n]
            delta = rewards[t, n] + gamma * bootstrap - values[t, n]
            if terminated[t, n] or truncated[t, n]:
                running = delta  # the next step belongs to another episode
            else:
                running = delta + gamma * lam * running
            adv[t, n] = running
    return adv, adv + values


@pytest.mark.parametrize("gamma,lam", [(0.99, 0.95), (0.9, 1.0), (0.5, 0.0)])
def test_gae_matches_numpy_loop_with_terminations_and_truncations(gamma, lam):
    rng = np.random.default_rng(0)
    T, N = 37, 5
    rewards = rng.normal(size=(T, N))
    values = rng.normal(size=(T, N))
    next_values = rng.normal(size=(T, N))
    terminated = rng.random((T, N)) < 0.1
    truncated = (rng.random((T, N)) < 0.1) & ~terminated
    assert terminated.any() and truncated.any()
    done = terminated | truncated
    adv, ret = gae_advantages(
        jnp.asarray(rewards, jnp.float32),
        jnp.asarray(values, jnp.float32),
        jnp.asarray(next_values, jnp.float32),
        jnp.asarray(terminated),
        jnp.asarray(done),
        gamma,
        lam,
    )
    ref_adv, ref_ret = gae_numpy(rewards, values, next_values, terminated, truncated, gamma, lam)
    np.testing.assert_allclose(np.asarray(adv), ref_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ret), ref_ret, rtol=1e-5, atol=1e-5)


def test_gae_hand_worked_truncation_vs_termination():
    # Two steps of one env, gamma = 0.5, lambda = 1, V(s) = 1 everywhere, rewards 1.
    # Step 1 ends the episode. If it is a truncation with V(final obs) = 4:
    #   delta_1 = 1 + 0.5 * 4 - 1 = 2;  A_1 = 2
    #   delta_0 = 1 + 0.5 * 1 - 1 = 0.5; A_0 = 0.5 + 0.5 * 2 = 1.5
    # If it is a termination: delta_1 = 1 - 1 = 0; A_0 = 0.5.
    r = jnp.array([[1.0], [1.0]])
    v = jnp.array([[1.0], [1.0]])
    nv = jnp.array([[1.0], [4.0]])
    done = jnp.array([[False], [True]])
    adv_trunc, ret_trunc = gae_advantages(r, v, nv, jnp.array([[False], [False]]), done, 0.5, 1.0)
    np.testing.assert_allclose(np.asarray(adv_trunc)[:, 0], [1.5, 2.0])
    np.testing.assert_allclose(np.asarray(ret_trunc)[:, 0], [2.5, 3.0])
    adv_term, _ = gae_advantages(r, v, nv, done, done, 0.5, 1.0)
    np.testing.assert_allclose(np.asarray(adv_term)[:, 0], [0.5, 0.0])


def test_gae_lambda_one_is_discounted_return_minus_value():
    # Identity: with lambda = 1 and no episode end, A_t = sum_k gamma^k r_{t+k} + gamma^{T-t} V_T - V_t.
    rng = np.random.default_rng(1)
    T, gamma = 20, 0.9
    r = rng.normal(size=(T,))
    v = rng.normal(size=(T,))
    v_last = 0.7
    nv = np.append(v[1:], v_last)
    no = jnp.zeros((T,), bool)
    adv, _ = gae_advantages(jnp.asarray(r), jnp.asarray(v), jnp.asarray(nv), no, no, gamma, 1.0)
    expected = np.array(
        [sum(gamma**k * r[t + k] for k in range(T - t)) + gamma ** (T - t) * v_last - v[t] for t in range(T)]
    )
    np.testing.assert_allclose(np.asarray(adv), expected, rtol=1e-4, atol=1e-4)


def test_gae_lambda_zero_is_one_step_td_error():
    r = jnp.array([1.0, 2.0, 3.0])
    v = jnp.array([0.5, 0.5, 0.5])
    nv = jnp.array([2.0, 2.0, 2.0])
    no = jnp.zeros((3,), bool)
    adv, _ = gae_advantages(r, v, nv, no, no, 0.9, 0.0)
    np.testing.assert_allclose(np.asarray(adv), np.asarray(r) + 0.9 * 2.0 - 0.5, rtol=1e-6)


def test_gae_rejects_mismatched_shapes():
    with pytest.raises(AssertionError):
        gae_advantages(jnp.zeros((4, 2)), jnp.zeros((4, 3)), jnp.zeros((4, 2)), jnp.zeros((4, 2)), jnp.zeros((4, 2)), 0.9, 0.9)
