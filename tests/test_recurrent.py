"""Recurrent PPO (policy gru): the hidden state's resets, whole-sequence minibatches, learning a memory
task that a feed-forward policy cannot, vmapped seeds, evaluation, and bit-identical resume."""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxppo import HParams, PPOConfig
from purejaxppo.core import recurrent
from purejaxppo.core.parts import make_parts
from purejaxppo.core.train import init_state, make_trainer
from purejaxppo.errors import ConfigError
from purejaxppo.run.evaluate import make_evaluate, record_episode
from purejaxppo.run.runner import run
from purejaxppo.scale.parallel import check_shards

# MemoryChain (gymnax's default memory length 5): a context bit shown only at the first step; the
# reward at the end is +1 if the last action matches it, else -1. A memoryless policy can only guess.
MEMORY = PPOConfig(env="MemoryChain-bsuite", policy="gru", gru_hidden=32, num_envs=32, num_steps=32,
                   num_minibatches=4, update_epochs=4, lr=2.5e-3, ent_coef=0.01, total_timesteps=32 * 32 * 40)


def _rollout(config):
    parts = make_parts(config)
    hp = HParams.from_config(config)
    state = init_state(parts, jax.random.key(0), hp)
    state, (traj, h0), _ = jax.jit(lambda s: recurrent.collect(parts, s, jax.random.key(1)))(state)
    return parts, state, traj, h0


def test_start_flags_mark_exactly_the_steps_after_an_episode_ended():
    config = PPOConfig(env="Probe-TimeLimit", policy="gru", gru_hidden=8, num_envs=3, num_steps=12, num_minibatches=1,
                       total_timesteps=36)
    _, state, traj, h0 = _rollout(config)
    done = np.asarray(traj.terminated | traj.truncated)
    start = np.asarray(traj.start)
    assert start[0].all() and not np.asarray(h0).any()  # the run's first observations, a zero state
    np.testing.assert_array_equal(start[1:], done[:-1])
    np.testing.assert_array_equal(np.asarray(state.starts), done[-1])
    assert done.sum() == 3 * 2  # Probe-TimeLimit truncates every 5 steps: steps 5 and 10


def test_hidden_state_carries_within_an_episode_and_is_reset_at_its_start():
    config = PPOConfig(env="CartPole-v1", policy="gru", gru_hidden=16, num_envs=4, num_steps=64, num_minibatches=1,
                       total_timesteps=256)
    parts, _, traj, h0 = _rollout(config)
    start = np.asarray(traj.start)
    env, t_start = next((e, t) for e in range(4) for t in range(2, 60) if start[t, e] and not start[t + 1:t + 3, e].any())
    params = init_state(parts, jax.random.key(0), HParams.from_config(config)).params
    seq = recurrent.Sequences(traj.obs, traj.start, h0)
    ys, _ = recurrent.unroll(parts.network, params, seq)
    # change the observation just before the episode start: nothing from step t_start on may change ...
    bumped = seq._replace(obs=seq.obs.at[t_start - 1, env].add(1.0))
    ys_bumped, _ = recurrent.unroll(parts.network, params, bumped)
    diff = np.abs(np.asarray(ys_bumped - ys))[:, env].max(axis=-1)
    assert diff[t_start - 1] > 1e-3  # the step that read the changed observation
    assert (diff[t_start:] == 0).all()  # reset at the episode start: no information crosses it
    # ... while a change inside the episode reaches the next steps through the hidden state
    inside = seq._replace(obs=seq.obs.at[t_start, env].add(1.0))
    ys_inside, _ = recurrent.unroll(parts.network, params, inside)
    assert np.abs(np.asarray(ys_inside - ys))[t_start + 1, env].max() > 1e-4


def test_minibatches_are_whole_environments_contiguous_in_time():
    t, n, m = 6, 8, 4
    x = jnp.arange(t * n).reshape(t, n)  # x[step, env] = step * n + env
    perm = jnp.array([3, 0, 7, 1, 6, 2, 5, 4])
    mb = np.asarray(recurrent.split_sequences(x, perm, m))
    assert mb.shape == (m, t, n // m)
    for j in range(m):
        for c in range(n // m):
            env = int(perm[j * (n // m) + c])
            np.testing.assert_array_equal(mb[j, :, c], np.arange(t) * n + env)  # one env, every step in order


def test_gru_configuration_errors_are_one_line():
    with pytest.raises(ConfigError, match="policy: got 'lstm'; accepted: mlp, gru"):
        make_trainer(PPOConfig(policy="lstm"))
    with pytest.raises(ConfigError, match="does not divide num_envs = 6, and a recurrent policy's minibatches"):
        make_trainer(PPOConfig(policy="gru", num_envs=6, num_minibatches=4, num_steps=8, total_timesteps=48))
    with pytest.raises(ConfigError, match="shared_torso: got True, but policy gru"):
        make_trainer(PPOConfig(policy="gru", shared_torso=True))
    with pytest.raises(ConfigError, match="policy: gru is not supported with data parallelism yet"):
        check_shards(PPOConfig(policy="gru"), 2)


@pytest.fixture(scope="module")
def memory_runs():
    """Two seeds of the GRU and two of the MLP on MemoryChain, each pair vmapped in one program."""
    out = {}
    for name, config in (("gru", MEMORY), ("mlp", MEMORY.replace(policy="mlp"))):
        trainer = make_trainer(config)
        keys = jax.random.split(jax.random.key(0), 2)
        states, metrics = jax.jit(jax.vmap(trainer.train, in_axes=(0, None)))(keys, HParams.from_config(config))
        evaluate = jax.jit(jax.vmap(make_evaluate(trainer, num_episodes=64, deterministic=True)))
        returns = np.asarray(evaluate(states, jax.random.split(jax.random.key(5), 2))).mean(axis=1)
        out[name] = (trainer, states, metrics, returns)
    return out


def test_gru_learns_the_memory_task_that_an_mlp_cannot(memory_runs):
    gru_returns, mlp_returns = memory_runs["gru"][3], memory_runs["mlp"][3]
    assert (gru_returns >= 0.8).all(), gru_returns  # both seeds remember the context
    assert (np.abs(mlp_returns) <= 0.25).all(), mlp_returns  # a guess: 0 in expectation


def test_recorded_episode_of_a_gru_agent(memory_runs):
    trainer, states, _, _ = memory_runs["gru"]
    one = jax.tree_util.tree_map(lambda x: x[0], states)
    frames, rewards = record_episode(trainer, one, deterministic=True, seed=3)
    assert len(frames) == len(rewards) + 1 and rewards.sum() == 1.0


def test_gru_run_resumes_bit_identically(tmp_path):
    # the hidden state and episode-start flags are part of the checkpoint: a resume from update 2 ends
    # exactly where the uninterrupted run ended
    config = MEMORY.replace(total_timesteps=32 * 32 * 4)
    full = run(config, str(tmp_path), chunk_updates=2, checkpoint_every=2, keep_checkpoints=10, log=lambda m: None)
    shutil.rmtree(tmp_path / "checkpoints" / "4")
    (tmp_path / "summary.json").unlink()
    resumed = run(config, str(tmp_path), resume=True, checkpoint_every=2, log=lambda m: None)
    assert resumed["resumed_from_update"] == 2 and resumed["state"].hidden.shape == (32, 32)
    leaves = zip(jax.tree_util.tree_leaves(resumed["state"]), jax.tree_util.tree_leaves(full["state"]))
    for a, b in leaves:
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for name, values in full["metrics"].items():
        np.testing.assert_array_equal(resumed["metrics"][name], values, err_msg=name)
