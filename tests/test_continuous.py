"""Continuous-control settings: the tanh-squashed Gaussian (log-probability, entropy estimate and its
gradient, the mapping into the bounds), the state-dependent standard deviation, reward_scale, and the
one-line errors for settings a discrete task does not take."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxppo import HParams, PPOConfig
from purejaxppo.core.distributions import DiagGaussian, TanhGaussian, tanh_log_det
from purejaxppo.core.networks import MIN_STD, ActorCritic
from purejaxppo.core.stages import scale_rewards
from purejaxppo.core.train import init_state, make_parts
from purejaxppo.envs import make_env
from purejaxppo.errors import ConfigError


def _normal_logpdf(x, m, s):
    return -0.5 * ((x - m) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)


def test_tanh_log_prob_is_the_change_of_variables_by_hand():
    mean, log_std = np.array([0.3, -1.2]), np.array([-0.5, 0.4])
    for u in ([0.1, -0.7], [2.5, -3.0], [8.0, -9.0]):
        expect = sum(_normal_logpdf(u[d], mean[d], math.exp(log_std[d])) - math.log1p(-math.tanh(u[d]) ** 2)
                     if abs(u[d]) < 5 else
                     _normal_logpdf(u[d], mean[d], math.exp(log_std[d])) - (2 * (math.log(2) - abs(u[d])))
                     for d in range(2))
        got = float(TanhGaussian.log_prob((jnp.asarray(mean), jnp.asarray(log_std)), jnp.asarray(u)))
        assert got == pytest.approx(expect, rel=1e-5)
    # the Jacobian cancels in PPO's ratio: the ratio equals the Gaussian one
    p_old, p_new = (jnp.zeros(2), jnp.zeros(2)), (jnp.array([0.2, 0.1]), jnp.array([-0.1, 0.3]))
    u = jnp.array([1.7, -0.4])
    ratio_tanh = TanhGaussian.log_prob(p_new, u) - TanhGaussian.log_prob(p_old, u)
    ratio_gauss = DiagGaussian.log_prob(p_new, u) - DiagGaussian.log_prob(p_old, u)
    assert float(ratio_tanh) == pytest.approx(float(ratio_gauss), abs=1e-6)


def test_tanh_entropy_estimate_matches_monte_carlo_and_has_a_gradient():
    params = (jnp.array([0.5, -1.0]), jnp.array([0.2, -0.3]))
    # the exact entropy of the squashed variable by Monte Carlo with NumPy: -E[log p(tanh u)]
    rng = np.random.default_rng(0)
    m, s = np.asarray(params[0]), np.exp(np.asarray(params[1]))
    u = m + s * rng.standard_normal((200_000, 2))
    logp = (-0.5 * ((u - m) / s) ** 2 - np.log(s) - 0.5 * np.log(2 * np.pi) - np.log1p(-np.tanh(u) ** 2)).sum(1)
    exact = -logp.mean()
    est = np.asarray(jax.vmap(lambda a: TanhGaussian.entropy(params, a))(jnp.asarray(u[:20_000], jnp.float32)))
    assert est.mean() == pytest.approx(exact, abs=0.03)
    # squashing lowers the entropy below the Gaussian's
    assert exact < float(DiagGaussian.entropy(params))
    # the gradient reaches the mean through the squashing term (a fixed-u -log p would give a zero-mean score)
    g = jax.grad(lambda mu: TanhGaussian.entropy((mu, params[1]), jnp.array([1.5, -2.0])))(params[0])
    # d/dmu log(1 - tanh(u)^2) = -2 tanh(u): the bonus pulls the draw back from saturation
    np.testing.assert_allclose(np.asarray(g), -2 * np.tanh([1.5, -2.0]), rtol=1e-5)


def test_tanh_maps_into_the_bounds_and_clip_clips():
    env, _ = make_env("Pendulum-v1")  # torque in [-2, 2]
    u = jnp.array([[-50.0], [0.0], [0.5], [50.0]])
    np.testing.assert_allclose(np.asarray(env.env_action(u, "tanh"))[:, 0], [-2, 0, 2 * math.tanh(0.5), 2], atol=1e-6)
    np.testing.assert_allclose(np.asarray(env.env_action(u, "clip"))[:, 0], [-2, 0, 0.5, 2])
    np.testing.assert_allclose(np.asarray(env.env_action(u, "none")), np.asarray(u))
    assert float(tanh_log_det(jnp.array([30.0]))) == pytest.approx(2 * (math.log(2) - 30), rel=1e-6)


def test_state_dependent_std_starts_at_log_std_init_and_depends_on_the_observation():
    net = ActorCritic(action_dim=3, continuous=True, state_dependent_std=True, log_std_init=-0.5)
    obs = jnp.array([[0.1, 0.2], [3.0, -2.0]])
    params = net.init(jax.random.key(0), obs)
    assert "log_std" not in params["params"] and params["params"]["policy_head"]["kernel"].shape == (64, 6)
    zero = jax.tree_util.tree_map(jnp.zeros_like, params)
    _, log_std = net.apply(zero, obs, method=ActorCritic.policy)
    np.testing.assert_allclose(np.asarray(log_std), -0.5, atol=1e-5)
    # with real weights the scale varies with the observation, and never falls below the floor
    big = jax.tree_util.tree_map(lambda x: x * 300.0, params)
    _, log_std = net.apply(big, obs, method=ActorCritic.policy)
    assert not np.allclose(np.asarray(log_std[0]), np.asarray(log_std[1]))
    assert np.all(np.asarray(log_std) >= math.log(MIN_STD) - 1e-6)


def test_reward_scale_multiplies_before_normalisation():
    config = PPOConfig(env="Pendulum-v1", num_envs=2, num_steps=4, num_minibatches=1, total_timesteps=8)
    parts = make_parts(config.replace(reward_scale=0.25))
    hp = HParams.from_config(config)
    state = init_state(parts, jax.random.key(0), hp)

    class Traj:
        reward = jnp.arange(8.0).reshape(4, 2)
        terminated = truncated = jnp.zeros((4, 2), bool)

    _, rewards = scale_rewards(parts, state, Traj, hp)
    np.testing.assert_allclose(np.asarray(rewards), 0.25 * np.arange(8.0).reshape(4, 2))


def test_settings_a_discrete_task_refuses():
    for field, value in (("action_dist", "tanh"), ("state_dependent_std", True)):
        with pytest.raises(ConfigError, match=f"^{field}: got .* discrete action space"):
            make_parts(PPOConfig(env="CartPole-v1", **{field: value}))
    with pytest.raises(ConfigError, match="action_dist: got 'beta'; accepted: gaussian, tanh"):
        from purejaxppo.core.config import validate
        validate(PPOConfig(env="Pendulum-v1", action_dist="beta"))
    with pytest.raises(ConfigError, match="reward_scale: got 0"):
        from purejaxppo.core.config import validate
        validate(PPOConfig(reward_scale=0))
