"""Loss terms, distributions, normaliser and KL controller against hand-worked numbers."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxppo import HParams, PPOConfig
from purejaxppo.core import losses
from purejaxppo.core.distributions import Categorical, DiagGaussian
from purejaxppo.core.feedforward import Batch
from purejaxppo.core.normalize import rms_init, rms_normalize, rms_update


def test_clipped_surrogate_hand_worked():
    ratio = jnp.array([0.5, 1.1, 1.5, 0.7])
    adv = jnp.array([1.0, 1.0, 2.0, -1.0])
    # eps = 0.2: per-sample min(r A, clip(r) A)
    #   r=0.5, A=1:  min(0.5, 0.8)  = 0.5
    #   r=1.1, A=1:  min(1.1, 1.1)  = 1.1
    #   r=1.5, A=2:  min(3.0, 2.4)  = 2.4
    #   r=0.7, A=-1: min(-0.7, -0.8) = -0.8
    loss, clipfrac = losses.clipped_surrogate_loss(ratio, adv, 0.2)
    assert float(loss) == pytest.approx(-(0.5 + 1.1 + 2.4 - 0.8) / 4)
    assert float(clipfrac) == pytest.approx(3 / 4)  # 0.5, 1.5 and 0.7 are outside [0.8, 1.2]


def test_surrogate_without_clipping():
    ratio = jnp.array([0.5, 1.5])
    adv = jnp.array([1.0, 2.0])
    loss, clipfrac = losses.clipped_surrogate_loss(ratio, adv, 0.0)
    assert float(loss) == pytest.approx(-(0.5 + 3.0) / 2)
    assert float(clipfrac) == 0.0


def test_kl_estimate_hand_worked_and_exact_in_expectation():
    # log r = log 2: (2 - 1) - log 2 = 0.30685; log r = 0: 0.
    assert float(losses.kl_estimate(jnp.array([math.log(2.0), 0.0]))) == pytest.approx((1 - math.log(2)) / 2, rel=1e-6)
    # Expectation over a ~ p of (q/p - 1) - log(q/p) is KL(p || q) exactly.
    p = np.array([0.7, 0.2, 0.1])
    q = np.array([0.5, 0.3, 0.2])
    terms = np.array([(q[i] / p[i] - 1) - math.log(q[i] / p[i]) for i in range(3)])
    kl = float(np.sum(p * (np.log(p) - np.log(q))))
    assert float(np.sum(p * terms)) == pytest.approx(kl, rel=1e-6)
    # and the function computes each term:
    for i in range(3):
        assert float(losses.kl_estimate(jnp.array([math.log(q[i] / p[i])]))) == pytest.approx(terms[i], rel=1e-5)


def test_value_loss_clipped_and_unclipped():
    v = jnp.array([2.0, 0.0])
    v_old = jnp.array([1.0, 0.0])
    ret = jnp.array([3.0, 1.0])
    # unclipped: 0.5 * mean((2-3)^2, (0-1)^2) = 0.5
    assert float(losses.value_loss(v, v_old, ret, 0.2, clip=False)) == pytest.approx(0.5)
    # clipped: v_clip = [1.2, 0]; losses max((1)^2,(1.8)^2)=3.24 and max(1,1)=1 -> 0.5*mean = 1.06
    assert float(losses.value_loss(v, v_old, ret, 0.2, clip=True)) == pytest.approx(0.5 * (3.24 + 1.0) / 2)


def test_adaptive_kl_rule():
    state = losses.kl_controller_init(1.0)
    target = 0.01
    assert float(losses.adaptive_kl_update(state, 0.005, target).coef) == 0.5  # 0.005 < 0.00667
    assert float(losses.adaptive_kl_update(state, 0.02, target).coef) == 2.0  # 0.02 > 0.015
    assert float(losses.adaptive_kl_update(state, 0.01, target).coef) == 1.0
    assert float(losses.adaptive_kl_update(state, 0.0066, target).coef) == 0.5
    assert float(losses.adaptive_kl_update(state, 0.0068, target).coef) == 1.0
    assert float(losses.adaptive_kl_update(state, 0.0151, target).coef) == 2.0


def test_explained_variance():
    ret = jnp.array([1.0, 2.0, 3.0, 4.0])
    assert float(losses.explained_variance(ret, ret)) == pytest.approx(1.0)
    assert float(losses.explained_variance(jnp.zeros(4), ret)) == pytest.approx(0.0)
    assert np.isnan(float(losses.explained_variance(jnp.zeros(4), jnp.ones(4))))


def test_normalize_advantages():
    a = losses.normalize_advantages(jnp.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(np.asarray(a), np.array([-1.0, 0.0, 1.0]) / np.std([1, 2, 3]) * 1.0, rtol=1e-5)


def test_categorical_log_prob_and_entropy():
    logits = jnp.log(jnp.array([0.25, 0.75]))
    assert float(Categorical.log_prob(logits, jnp.array(1))) == pytest.approx(math.log(0.75), rel=1e-6)
    assert float(Categorical.entropy(logits)) == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), rel=1e-6)
    assert int(Categorical.mode(logits)) == 1


def test_gaussian_log_prob_and_entropy():
    mean = jnp.array([0.0, 1.0])
    log_std = jnp.log(jnp.array([1.0, 2.0]))
    a = jnp.array([1.0, 0.0])
    # N(1; 0, 1) and N(0; 1, 2): -0.5 - 0.5 log 2pi  +  -(1/8) - log 2 - 0.5 log 2pi
    expected = -0.5 - 0.5 * math.log(2 * math.pi) - 0.125 - math.log(2.0) - 0.5 * math.log(2 * math.pi)
    assert float(DiagGaussian.log_prob((mean, log_std), a)) == pytest.approx(expected, rel=1e-6)
    ent = 0.5 * math.log(2 * math.pi * math.e) * 2 + math.log(2.0)
    assert float(DiagGaussian.entropy((mean, log_std))) == pytest.approx(ent, rel=1e-6)


def test_running_mean_std_matches_numpy():
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(3.0, 2.0, size=(50, 3)), rng.normal(-1.0, 0.5, size=(70, 3))
    rms = rms_update(rms_update(rms_init((3,)), jnp.asarray(x1)), jnp.asarray(x2))
    allx = np.concatenate([x1, x2])
    np.testing.assert_allclose(np.asarray(rms.mean), allx.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(rms.var), allx.var(0), rtol=1e-3)
    z = rms_normalize(rms, jnp.asarray(allx), 10.0)
    np.testing.assert_allclose(np.asarray(z).mean(0), 0.0, atol=1e-3)
    assert float(jnp.max(jnp.abs(rms_normalize(rms, jnp.full((3,), 1e6), 5.0)))) == 5.0


def test_kl_estimate_and_its_gradient_equal_the_true_kl_on_exact_samples():
    # Samples in the exact proportions of p (6, 3 and 1 of 10) make the sample mean the expectation,
    # so losses.kl_estimate of log q/p over them is KL(p || q_theta), and so is its gradient.
    p = np.array([0.6, 0.3, 0.1])
    actions = np.array([0] * 6 + [1] * 3 + [2])
    theta = jnp.array([0.2, -0.1, 0.3])

    def estimator(th):
        return losses.kl_estimate(jax.nn.log_softmax(th)[actions] - jnp.log(p)[actions])

    def true_kl(th):
        return jnp.sum(p * (jnp.log(p) - jax.nn.log_softmax(th)))

    assert float(estimator(theta)) == pytest.approx(float(true_kl(theta)), rel=1e-5)
    np.testing.assert_allclose(np.asarray(jax.grad(estimator)(theta)), np.asarray(jax.grad(true_kl)(theta)), atol=1e-6)
    assert float(estimator(jnp.log(jnp.asarray(p)))) == pytest.approx(0.0, abs=1e-7)  # q = p


def _loss_case(kl_penalty: bool, clip_vloss: bool):
    """ppo_loss on two states with a table 'network': logits and values indexed by the observation."""
    params = {"logits": jnp.log(jnp.array([[0.5, 0.5], [0.2, 0.8]])), "values": jnp.array([1.0, 0.3])}
    batch = Batch(obs=jnp.array([0, 1, 1]), action=jnp.array([1, 1, 0]),
                  log_prob=jnp.log(jnp.array([0.4, 0.7, 0.3])), value=jnp.array([0.8, 0.5, 0.5]),
                  advantage=jnp.array([1.0, -0.5, 2.0]), target=jnp.array([1.5, 0.0, 1.0]))
    hp = HParams.from_config(PPOConfig(clip_eps=0.2, vf_clip_eps=0.1, ent_coef=0.01, vf_coef=0.5))
    return losses.ppo_loss(lambda prm, obs: (prm["logits"][obs], prm["values"][obs]), Categorical, params, batch, hp,
                           jnp.float32(0.7), kl_penalty=kl_penalty, clip_vloss=clip_vloss)


def test_ppo_loss_hand_worked():
    # new probabilities of the actions: 0.5, 0.8, 0.2; old: 0.4, 0.7, 0.3
    r = np.array([0.5 / 0.4, 0.8 / 0.7, 0.2 / 0.3])  # 1.25, 1.142857, 0.666667
    a = np.array([1.0, -0.5, 2.0])
    surrogate = np.minimum(r * a, np.clip(r, 0.8, 1.2) * a)  # 1.2, -0.571429, 1.333333
    policy = -surrogate.mean()
    kl = np.mean((r - 1) - np.log(r))
    v, v_old, ret = np.array([1.0, 0.3, 0.3]), np.array([0.8, 0.5, 0.5]), np.array([1.5, 0.0, 1.0])
    v_clip = v_old + np.clip(v - v_old, -0.1, 0.1)  # 0.9, 0.4, 0.4
    v_loss = 0.5 * np.mean(np.maximum((v - ret) ** 2, (v_clip - ret) ** 2))
    ent = lambda q: -np.sum(q * np.log(q))  # noqa: E731
    entropy = np.mean([ent(np.array([0.5, 0.5])), ent(np.array([0.2, 0.8])), ent(np.array([0.2, 0.8]))])

    total, info = _loss_case(kl_penalty=False, clip_vloss=True)
    assert float(info.policy_loss) == pytest.approx(policy, rel=1e-5)
    assert float(info.approx_kl) == pytest.approx(kl, rel=1e-4)
    assert float(info.value_loss) == pytest.approx(v_loss, rel=1e-5)
    assert float(info.entropy) == pytest.approx(entropy, rel=1e-5)
    assert float(info.clipfrac) == pytest.approx(2 / 3)  # 1.25 and 0.67 lie outside [0.8, 1.2]
    assert float(total) == pytest.approx(policy - 0.01 * entropy + 0.5 * v_loss, rel=1e-5)

    total, info = _loss_case(kl_penalty=True, clip_vloss=False)
    assert float(info.policy_loss) == pytest.approx(policy + 0.7 * kl, rel=1e-5)
    assert float(info.value_loss) == pytest.approx(0.5 * np.mean((v - ret) ** 2), rel=1e-5)
