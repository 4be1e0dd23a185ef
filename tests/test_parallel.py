"""Data-parallel training of one agent: the per-device program, emulated shards, uneven splits.

The runs on 4 fake CPU devices are in test_devices.py."""


import jax
import numpy as np
import pytest

from purejaxppo import ConfigError, HParams, PPOConfig, make_train
from purejaxppo.scale.parallel import AXIS, check_shards, env_mesh, make_data_parallel_train, sharded_trainer

CARTPOLE = PPOConfig(env="CartPole-v1", num_envs=8, num_steps=32, num_minibatches=2, update_epochs=2,
                     total_timesteps=8 * 32 * 12)
# continuous actions, both normalisations, adaptive KL penalty on top of clipping, target-KL early stop
PENDULUM = PPOConfig(env="Pendulum-v1", num_envs=8, num_steps=32, num_minibatches=2, update_epochs=3,
                     total_timesteps=8 * 32 * 12, normalize_obs=True, normalize_reward=True,
                     kl_penalty="adaptive", target_kl=0.05)

def test_two_shards_emulated_on_one_device_match_the_one_device_program():
    """The per-device body with its real collectives, run as 2 shards by ``vmap`` over a named
    axis on this one device: a different program from the one-device run, the same result."""
    config = CARTPOLE.replace(total_timesteps=8 * 32 * 4)
    assert jax.device_count() == 1
    body = sharded_trainer(config, 2)
    key, hp = jax.random.key(1), HParams.from_config(config)
    two_shards = jax.vmap(body.train, in_axes=(None, None), axis_name=AXIS, axis_size=2)
    states, two = jax.jit(two_shards)(key, hp)
    one_state, one = jax.jit(make_train(config))(key)
    assert states.obs.shape == (2, 4) + one_state.obs.shape[1:]  # each shard steps 4 of the 8 environments
    for name in one:  # replicated outputs agree between the shards
        np.testing.assert_array_equal(two[name][0], two[name][1], err_msg=name)
    # the same actions, environments and episodes: the action noise and env keys are the one-device run's
    for name in ("charts/episodic_return", "charts/episodic_length", "charts/episodes", "losses/clipfrac"):
        np.testing.assert_array_equal(two[name][0], np.asarray(one[name]), err_msg=name)
    # the gradients are summed in a different order: float tolerance
    for name in ("losses/policy_loss", "losses/value_loss", "losses/entropy", "losses/approx_kl",
                 "losses/explained_variance"):
        np.testing.assert_allclose(two[name][0], np.asarray(one[name]), rtol=1e-4, atol=1e-6, err_msg=name)
    np.testing.assert_array_equal(np.concatenate([states.obs[0], states.obs[1]]), np.asarray(one_state.obs))
    for a, b in zip(jax.tree.leaves(one_state.params), jax.tree.leaves(states.params)):
        np.testing.assert_allclose(np.asarray(b[0]), np.asarray(a), rtol=1e-4, atol=1e-6)


def test_data_parallel_on_one_device_is_the_ordinary_program():
    assert make_data_parallel_train(CARTPOLE, env_mesh()).__qualname__ == make_train(CARTPOLE).__qualname__


def test_uneven_splits_are_refused():
    with pytest.raises(ConfigError, match=r"num_envs: 6 environments cannot be split evenly over 4 devices"):
        check_shards(CARTPOLE.replace(num_envs=6, num_minibatches=1), 4)
    # 8 envs x 32 steps / 64 minibatches = minibatches of 4 samples, not divisible by 8 devices
    with pytest.raises(ConfigError, match=r"num_minibatches: minibatches of 4 samples cannot be split evenly over 8"):
        check_shards(CARTPOLE.replace(num_minibatches=64), 8)


