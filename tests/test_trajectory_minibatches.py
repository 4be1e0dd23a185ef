"""trajectory_minibatches: minibatches of whole environments' trajectories, and with
recompute_advantages every minibatch's advantages from the critic of the moment (Brax's PPO loss).

The rows a minibatch takes are checked against NumPy indexing of the rollout, the recomputed
advantages against a NumPy GAE loop over the new critic's values (time limits included), the
policy step against minibatch steps composed by hand from the whole-batch recomputation, learning
on CartPole, and the refusals where the variant does not apply."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import pendulum_rollout, run_main
from test_gae import gae_numpy

from purejaxppo import PPOConfig, make_train
from purejaxppo.core import feedforward, stages, train
from purejaxppo.core.act import observe
from purejaxppo.core.networks import ActorCritic
from purejaxppo.errors import ConfigError
from purejaxppo.scale.parallel import sharded_trainer

T, N = 256, 4


@pytest.fixture(scope="module")
def pendulum():
    """One rollout of Pendulum, whose 200-step limit truncates every environment inside the 256 steps;
    rewards scaled, observations normalised; and a changed critic."""
    parts, hparams, state, traj, batch = pendulum_rollout(
        num_envs=N, num_steps=T, num_minibatches=2, update_epochs=2, total_timesteps=N * T, reward_scale=0.1,
        gamma=0.9, gae_lambda=0.8, recompute_advantages=True, trajectory_minibatches=True)
    # a critic (and policy) that differs from the one that collected the batch
    leaves, tree = jax.tree_util.tree_flatten(state.params)
    keys = jax.random.split(jax.random.key(2), len(leaves))
    params = jax.tree_util.tree_unflatten(tree, [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
    return parts, hparams, state, traj, batch, params


def test_a_minibatch_holds_the_rows_its_environments_collected(pendulum):
    parts, hparams, state, traj, batch, params = pendulum
    envs = jnp.array([3, 0])
    rows = feedforward.trajectory_rows(parts, params, batch, envs, hparams)
    for name in ("obs", "action", "log_prob", "value", "advantage", "target"):
        whole = np.asarray(getattr(batch, name))
        want = whole.reshape((T, N) + whole.shape[1:])[:, [3, 0]].reshape((2 * T,) + whole.shape[1:])
        np.testing.assert_array_equal(np.asarray(getattr(rows, name)), want, err_msg=name)
    # the rows are this rollout's: environment 3's raw observations, normalised as the batch has them
    np.testing.assert_allclose(np.asarray(rows.obs).reshape(T, 2, -1)[:, 0],
                               np.asarray(observe(parts.config, state.obs_rms, traj.obs[:, 3])), rtol=1e-6)
    assert rows.again is None


def test_recomputed_rows_are_gae_of_the_new_critic_over_their_trajectories(pendulum):
    parts, hparams, state, traj, batch, params = pendulum
    config = parts.config
    new = jax.jit(lambda p, b, e: feedforward.recomputed_trajectory_rows(parts, p, b, e, hparams))(
        params, batch, jnp.array([2, 1]))

    def value(raw):
        return np.asarray(parts.network.apply(params, observe(config, state.obs_rms, raw), method=ActorCritic.value),
                          np.float64)

    truncated, terminated = np.asarray(traj.truncated), np.asarray(traj.terminated)
    assert truncated.sum() == N and not terminated.any()  # one time limit per environment
    values = value(traj.obs)  # [T, N]
    next_values = np.concatenate([values[1:], value(state.obs)[None]], axis=0)
    next_values = np.where(truncated, value(traj.final_obs), next_values)
    adv, target = gae_numpy(0.1 * np.asarray(traj.reward, np.float64), values, next_values, terminated, truncated,
                            0.9, 0.8)
    np.testing.assert_allclose(np.asarray(new.advantage), adv[:, [2, 1]].reshape(-1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(new.target), target[:, [2, 1]].reshape(-1), rtol=1e-4, atol=1e-4)
    old = np.asarray(batch.advantage).reshape(T, N)[:, [2, 1]].reshape(-1)
    assert np.abs(np.asarray(new.advantage) - old).max() > 0.1  # the critic did change them
    np.testing.assert_array_equal(np.asarray(new.value), np.asarray(batch.value).reshape(T, N)[:, [2, 1]].reshape(-1))


def test_each_minibatch_learns_from_the_advantages_of_the_critic_before_it(pendulum):
    """PPO's policy step equals its minibatch steps composed by hand: each takes its environments'
    rows out of the whole batch recomputed (per epoch, checked in test_recompute.py) by the critic
    the step before it left; with the batch's own advantages instead, the result differs."""
    parts, hparams, state, _, batch, _ = pendulum
    config = parts.config
    # steps large enough that the critic moves the advantages between minibatches
    opt = stages.Optimiser(parts.optimizer(hparams), jnp.float32(0.01), state.kl.coef, hparams)
    key = jax.random.key(3)

    def pick(b, envs):
        return jax.tree_util.tree_map(lambda x: x.reshape((T, N) + x.shape[1:])[:, envs].reshape((-1,) + x.shape[1:]),
                                      b._replace(again=None))

    def by_hand(params, opt_state, recompute):
        carry = stages.MinibatchCarry(params, opt_state)
        for k in jax.random.split(key, config.update_epochs):
            order = stages.minibatch_order(parts.layout.permute, k, N, config.num_minibatches, N // 2)
            for envs in order:
                whole = feedforward.recompute_advantages(parts, carry.params, batch, hparams) if recompute else batch
                carry, _ = stages.minibatch_step(parts, opt, carry, pick(whole, envs))
        return carry.params

    params, opt_state = state.params, state.opt_state
    got = jax.jit(lambda p, s: train.make_stages(parts).optimise(opt, batch, p, s, key)[0])(params, opt_state)
    want = jax.jit(lambda p, s: by_hand(p, s, True))(params, opt_state)
    as_collected = jax.jit(lambda p, s: by_hand(p, s, False))(params, opt_state)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    assert max(np.abs(np.asarray(a) - np.asarray(c)).max()
               for a, c in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(as_collected))) > 1e-4


def test_cartpole_is_learned_from_trajectory_minibatches_recomputed_every_step():
    config = PPOConfig(total_timesteps=100_000, trajectory_minibatches=True, recompute_advantages=True)
    _, metrics = jax.jit(jax.vmap(make_train(config)))(jax.random.split(jax.random.key(0), 2))
    returns = np.asarray(metrics["charts/episodic_return"])  # [seeds, updates]
    last = np.nanmean(returns[:, -10:], axis=1)
    assert last.min() > 150, last  # a random policy scores about 22


@pytest.mark.parametrize("extra, words", [
    (["--policy", "gru"], "trajectory_minibatches: got True with policy gru and algo ppo; accepted: policy mlp with "
                          "algo ppo"),
    (["--num-envs", "6", "--num-minibatches", "4"], "num_minibatches: 4 does not divide num_envs = 6"),
])
def test_the_command_line_refuses_it_where_it_does_not_apply(extra, words, tmp_path):
    out = tmp_path / "run"
    done = run_main("train", "--out", out, "--trajectory-minibatches", *extra)
    assert done.returncode == 2
    err = done.stderr.strip()
    assert words in err and "\n" not in err and not out.exists(), err


def test_data_parallelism_is_refused():
    config = PPOConfig(num_envs=8, trajectory_minibatches=True)
    with pytest.raises(ConfigError, match="trajectory_minibatches: got True with data parallelism over 2 devices"):
        sharded_trainer(config, 2)
