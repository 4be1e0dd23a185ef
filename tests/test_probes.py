"""Probe environments: each checks that one part of the learner does its job.

Discrete and continuous variants run through the same code path as real
environments (gymnax Environment -> adapter -> compiled train).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxppo import PPOConfig, make_trainer
from purejaxppo.core.distributions import distribution
from purejaxppo.core.networks import ActorCritic

GAMMA = 0.9


def train_probe(env: str, **overrides):
    settings = dict(
        num_envs=16,
        num_steps=16,
        num_minibatches=2,
        update_epochs=4,
        total_timesteps=16 * 16 * 60,
        lr=3e-3,
        anneal_lr=False,
        gamma=GAMMA,
        gae_lambda=0.95,
        ent_coef=0.0,
        actor_hidden=(32,),
        critic_hidden=(32,),
    )
    config = PPOConfig(env=env, **{**settings, **overrides})
    trainer = make_trainer(config)
    state, metrics = jax.jit(trainer.train)(jax.random.key(0))

    def value(obs):
        return np.asarray(trainer.network.apply(state.params, jnp.asarray(obs, jnp.float32), method=ActorCritic.value))

    def policy(obs):
        return trainer.network.apply(state.params, jnp.asarray(obs, jnp.float32), method=ActorCritic.policy)

    return value, policy, metrics


@pytest.mark.parametrize("suffix", ["", "-Continuous"])
def test_critic_learns_constant_value(suffix):
    value, _, _ = train_probe("Probe-Constant" + suffix)
    assert value([[0.0]])[0] == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize("suffix", ["", "-Continuous"])
def test_critic_reads_its_observation(suffix):
    value, _, _ = train_probe("Probe-ObsReward" + suffix)
    v = value([[-1.0], [1.0]])
    assert v[0] == pytest.approx(-1.0, abs=0.15)
    assert v[1] == pytest.approx(1.0, abs=0.15)


@pytest.mark.parametrize("suffix", ["", "-Continuous"])
def test_critic_discounts(suffix):
    value, _, _ = train_probe("Probe-TwoStep" + suffix)
    v = value([[0.0], [1.0]])
    assert v[0] == pytest.approx(GAMMA, abs=0.1)
    assert v[1] == pytest.approx(1.0, abs=0.1)


def test_actor_learns_best_discrete_action():
    _, policy, metrics = train_probe("Probe-ActionReward")
    probs = np.asarray(jax.nn.softmax(policy([[0.0]])))[0]
    assert probs[1] > 0.9, probs
    assert np.nanmean(np.asarray(metrics["charts/episodic_return"])[-5:]) > 0.9


def test_actor_learns_best_continuous_action():
    _, policy, metrics = train_probe("Probe-ActionReward-Continuous", clip_actions=True)
    mean, log_std = policy([[0.0]])
    assert float(mean[0, 0]) == pytest.approx(0.5, abs=0.15)
    # the optimum is deterministic: the policy should have narrowed
    assert float(log_std[0, 0]) < 0.0
    assert np.nanmean(np.asarray(metrics["charts/episodic_return"])[-5:]) > 0.85


@pytest.mark.parametrize("suffix", ["", "-Continuous"])
def test_truncation_is_bootstrapped(suffix):
    # Reward 1 forever, cut by a 5-step time limit: the true value is 1 / (1 - gamma) = 10.
    value_boot, _, _ = train_probe("Probe-TimeLimit" + suffix, total_timesteps=16 * 16 * 150, lr=1e-2)
    assert value_boot([[0.0]])[0] == pytest.approx(1 / (1 - GAMMA), rel=0.15)
    # Treating the time limit as a termination makes the value the mean of the truncated
    # 5-step returns instead (about 3.7 for gamma = 0.9), far from 10.
    value_cut, _, _ = train_probe("Probe-TimeLimit" + suffix, bootstrap_truncation=False)
    truncated_mean = np.mean([sum(GAMMA**k for k in range(5 - t)) for t in range(5)])
    assert value_cut([[0.0]])[0] == pytest.approx(truncated_mean, rel=0.2)


def test_distribution_helper_picks_the_right_family():
    from purejaxppo.core.distributions import Categorical, DiagGaussian

    assert distribution("discrete") is Categorical and distribution("continuous") is DiagGaussian
