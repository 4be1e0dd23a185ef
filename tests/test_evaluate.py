"""Evaluation episodes in one compiled program."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxppo import PPOConfig, make_trainer
from purejaxppo.run.evaluate import make_evaluate


def test_evaluate_counts_one_episode_per_env():
    # Probe-TimeLimit pays 1 per step and is cut after 5 steps: every episode returns exactly 5.
    trainer = make_trainer(PPOConfig(env="Probe-TimeLimit", num_envs=2, num_steps=8, num_minibatches=1, total_timesteps=16))
    state = trainer.init(jax.random.key(0), _hp(trainer))
    returns = jax.jit(make_evaluate(trainer, num_episodes=6, max_steps=20))(state, jax.random.key(1))
    np.testing.assert_array_equal(np.asarray(returns), 5.0)


def test_deterministic_evaluation_takes_the_mode():
    trainer = make_trainer(PPOConfig(env="Probe-ActionReward", num_envs=2, num_steps=8, num_minibatches=1, total_timesteps=16))
    state = trainer.init(jax.random.key(0), _hp(trainer))
    # Push the policy head's bias towards action 1; the mode must then always pick it (reward 1).
    params = jax.tree_util.tree_map(lambda x: x, state.params)
    params["params"]["policy_head"]["bias"] = params["params"]["policy_head"]["bias"].at[1].set(0.1)
    state = state.replace(params=params)
    det = make_evaluate(trainer, num_episodes=64, deterministic=True)(state, jax.random.key(2))
    sto = make_evaluate(trainer, num_episodes=64, deterministic=False)(state, jax.random.key(2))
    np.testing.assert_array_equal(np.asarray(det), 1.0)
    assert 0.2 < float(np.mean(np.asarray(sto))) < 0.8  # sampling still picks both actions


def _hp(trainer):
    from purejaxppo import HParams

    return HParams.from_config(trainer.config)


@pytest.mark.parametrize("clip, action, reward", [(True, 1.0, 1 - 0.5**2), (False, 3.0, 1 - 2.5**2)])
def test_evaluation_and_loaded_policies_follow_clip_actions(clip, action, reward):
    # Probe-ActionReward-Continuous pays 1 - (a - 0.5)^2 for the action it receives, unclipped.
    # With observation 0 the Gaussian's mean is the policy head's bias, here 3, outside [-1, 1].
    from purejaxppo.run.policy import PolicyParams, policy_act

    config = PPOConfig(env="Probe-ActionReward-Continuous", num_envs=2, num_steps=8, num_minibatches=1,
                       total_timesteps=16, clip_actions=clip)
    trainer = make_trainer(config)
    state = trainer.init(jax.random.key(0), _hp(trainer))
    params = jax.tree_util.tree_map(lambda x: x, state.params)
    params["params"]["policy_head"]["bias"] = params["params"]["policy_head"]["bias"].at[0].set(3.0)
    state = state.replace(params=params)
    returns = make_evaluate(trainer, num_episodes=4, deterministic=True)(state, jax.random.key(1))
    np.testing.assert_allclose(np.asarray(returns), reward, rtol=1e-5)
    act = policy_act(trainer, deterministic=True)
    got = act(PolicyParams(state.params, state.obs_rms), jnp.zeros(1), jax.random.key(2))
    np.testing.assert_allclose(np.asarray(got), [action], rtol=1e-6)


@pytest.mark.parametrize("args, message", [
    ((-1,), "num_episodes: got -1; accepted: a positive integer"),
    ((2.5,), "num_episodes: got 2.5; accepted: a positive integer"),
    ((2, True, -5), "max_steps: got -5; accepted: a positive integer or None"),
    ((2, True, 0), "max_steps: got 0; accepted: a positive integer or None"),
])
def test_bad_evaluation_arguments_are_one_line(args, message):
    from purejaxppo import ConfigError

    trainer = make_trainer(PPOConfig(env="CartPole-v1", num_envs=4, num_steps=16, total_timesteps=256,
                                     num_minibatches=1))
    with pytest.raises(ConfigError) as e:
        make_evaluate(trainer, *args)
    assert str(e.value) == message
    with pytest.raises(ConfigError, match=r"^make_evaluate: got a PPOConfig; accepted: a Trainer"):
        make_evaluate(trainer.config, 2)
