"""recompute_advantages: every epoch's advantages and targets from the critic of the moment.

The recomputation is checked against a NumPy GAE loop over values the new critic gives (time
limits included), one epoch against the plain update, learning on CartPole, and the command
line's refusal where the variant does not apply."""

import functools

import jax
import numpy as np
import pytest
from helpers import pendulum_rollout, run_main
from test_gae import gae_numpy

from purejaxppo import PPOConfig, make_train
from purejaxppo.core import feedforward, stages, train
from purejaxppo.core.act import observe
from purejaxppo.core.config import HParams
from purejaxppo.core.networks import ActorCritic
from purejaxppo.scale.parallel import AXIS, sharded_trainer


@pytest.fixture(scope="module")
def pendulum():
    """One rollout of Pendulum, whose 200-step limit truncates every environment inside the 256 steps;
    rewards are scaled and observations normalised, so each input the recomputation reads is exercised."""
    return pendulum_rollout(num_envs=3, num_steps=256, num_minibatches=4, total_timesteps=768, reward_scale=0.1,
                            gamma=0.9, gae_lambda=0.8, recompute_advantages=True)


def test_recomputed_advantages_are_gae_of_the_new_critic_with_time_limits(pendulum):
    parts, hparams, state, traj, batch = pendulum
    config = parts.config
    obs_rms, last_obs = state.obs_rms, state.obs  # what the batch is normalised with, and s_T
    # a critic that differs from the one that collected the batch
    leaves, tree = jax.tree_util.tree_flatten(state.params)
    keys = jax.random.split(jax.random.key(2), len(leaves))
    params = jax.tree_util.tree_unflatten(tree, [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
    new = jax.jit(lambda p, b: feedforward.recompute_advantages(parts, p, b, hparams))(params, batch)

    def value(raw):
        return np.asarray(parts.network.apply(params, observe(config, obs_rms, raw), method=ActorCritic.value),
                          np.float64)

    truncated, terminated = np.asarray(traj.truncated), np.asarray(traj.terminated)
    assert truncated.sum() == 3 and not terminated.any()  # one time limit per environment
    values = value(traj.obs)  # [T, N]
    next_values = np.concatenate([values[1:], value(last_obs)[None]], axis=0)
    next_values = np.where(truncated, value(traj.final_obs), next_values)  # the final observation at a time limit
    rewards = 0.1 * np.asarray(traj.reward, np.float64)
    adv, target = gae_numpy(rewards, values, next_values, terminated, truncated, 0.9, 0.8)
    np.testing.assert_allclose(np.asarray(new.advantage), adv.reshape(-1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(new.target), target.reshape(-1), rtol=1e-4, atol=1e-4)
    assert np.abs(np.asarray(new.advantage) - np.asarray(batch.advantage)).max() > 0.1  # the critic did change them
    np.testing.assert_array_equal(np.asarray(new.value), np.asarray(batch.value))  # the clip's reference stays
    assert new.again is None and batch.again is not None


def test_each_epoch_learns_from_the_advantages_of_the_critic_at_its_start(pendulum):
    """PPO's policy step with the recomputation equals two epochs composed by hand: recompute with
    the starting critic, an epoch, recompute with the critic that epoch left, an epoch."""
    parts, hparams, state, _, batch = pendulum
    opt = stages.Optimiser(parts.optimizer(hparams), hparams.lr, state.kl.coef, hparams)
    recompute = functools.partial(feedforward.recompute_advantages, parts)
    policy_step = train.make_stages(parts).optimise
    key = jax.random.key(3)

    def by_hand(params, opt_state):
        for k in jax.random.split(key, parts.config.update_epochs):
            params, opt_state, _ = feedforward.run_epoch(parts, opt, recompute(params, batch, hparams), params,
                                                         opt_state, k)
        return params

    def as_collected(params, opt_state):
        return stages.optimise(parts, opt, batch._replace(again=None), params, opt_state, key)[0]

    params, opt_state = state.params, state.opt_state
    got = jax.jit(lambda p, s: policy_step(opt, batch, p, s, key)[0])(params, opt_state)
    want, plain = jax.jit(by_hand)(params, opt_state), jax.jit(as_collected)(params, opt_state)
    leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves((got, want, plain))]
    n = len(leaves) // 3
    for a, b in zip(leaves[:n], leaves[n:2 * n]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert max(np.abs(a - c).max() for a, c in zip(leaves[:n], leaves[2 * n:])) > 1e-4  # not the plain update


@pytest.fixture(scope="module")
def one_epoch_runs():
    """Three updates of one epoch each, with and without the recomputation."""
    runs = {}
    for recompute in (False, True):
        config = PPOConfig(total_timesteps=3 * 512, update_epochs=1, recompute_advantages=recompute)
        runs[recompute] = jax.jit(make_train(config))(jax.random.key(0))
    return runs


def test_one_epoch_recomputed_is_the_plain_update(one_epoch_runs):
    """At the first epoch the critic is the one that collected the batch: the same advantages."""
    plain, recomputed = one_epoch_runs[False], one_epoch_runs[True]
    for a, b in zip(jax.tree_util.tree_leaves(plain[0].params), jax.tree_util.tree_leaves(recomputed[0].params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(plain[1]["losses/value_loss"], recomputed[1]["losses/value_loss"], rtol=1e-6)


def test_cartpole_is_learned_with_advantages_recomputed_every_epoch():
    config = PPOConfig(total_timesteps=100_000, recompute_advantages=True)
    _, metrics = jax.jit(jax.vmap(make_train(config)))(jax.random.split(jax.random.key(0), 2))
    returns = np.asarray(metrics["charts/episodic_return"])  # [seeds, updates]
    last = np.nanmean(returns[:, -10:], axis=1)
    assert last.min() > 150, last  # a random policy scores about 22


@pytest.mark.parametrize("extra, named", [(["--policy", "gru"], "policy gru"), (["--algo", "trpo"], "algo trpo")])
def test_the_command_line_refuses_it_where_it_does_not_apply(extra, named, tmp_path):
    out = tmp_path / "run"
    done = run_main("train", "--out", out, "--recompute-advantages", *extra)
    assert done.returncode == 2
    err = done.stderr.strip()
    assert "recompute_advantages: got True" in err and named in err and "accepted: policy mlp with algo ppo" in err
    assert "\n" not in err and not out.exists()


def test_two_data_parallel_shards_recompute_as_one_device_does():
    """Each device recomputes its own environments' advantages; the batch gathers them as the
    one-device program has them (the shards emulated by ``vmap`` over the named axis)."""
    config = PPOConfig(num_envs=8, num_steps=32, total_timesteps=8 * 32 * 3, recompute_advantages=True)
    key, hparams = jax.random.key(1), HParams.from_config(config)
    body = sharded_trainer(config, 2)
    states, two = jax.jit(jax.vmap(body.train, in_axes=(None, None), axis_name=AXIS, axis_size=2))(key, hparams)
    one_state, one = jax.jit(make_train(config))(key)
    for name in ("charts/episodic_return", "losses/value_loss", "losses/policy_loss"):
        np.testing.assert_allclose(two[name][0], np.asarray(one[name]), rtol=1e-4, atol=1e-6, err_msg=name)
    for a, b in zip(jax.tree_util.tree_leaves(one_state.params), jax.tree_util.tree_leaves(states.params)):
        np.testing.assert_allclose(np.asarray(b[0]), np.asarray(a), rtol=1e-4, atol=1e-6)
