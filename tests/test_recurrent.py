"""Recurrent PPO (policy gru): the hidden state's resets, whole-sequence minibatches, learning a memory
task that a feed-forward policy cannot, vmapped seeds, evaluation, and bit-identical resume."""

import csv
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import run_main

from purejaxppo import HParams, PPOConfig
from purejaxppo.core import recurrent
from purejaxppo.core.train import init_state, make_parts, make_trainer
from purejaxppo.errors import ConfigError
from purejaxppo.run.evaluate import make_evaluate, record_episode
from purejaxppo.run.runner import run
from purejaxppo.scale.parallel import AXIS, check_shards, sharded_trainer

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


def test_time_chunks_are_contiguous_and_start_from_the_hidden_state_at_their_first_step():
    t, n, length = 64, 3, 16
    x = jnp.arange(t * n).reshape(t, n)  # x[step, env] = step * n + env
    chunks = np.asarray(recurrent.chunk(x, length))
    assert chunks.shape == (length, (t // length) * n)
    for c in range(t // length):
        for env in range(n):  # sequence c * n + env: env's steps c * L ... (c + 1) * L - 1, in order
            np.testing.assert_array_equal(chunks[:, c * n + env], (np.arange(length) + c * length) * n + env)
    # a real batch: re-running every chunk from the hidden state it was given reproduces, step for step,
    # the features of the whole rollout re-run from its start (episode starts inside chunks included)
    config = PPOConfig(env="CartPole-v1", policy="gru", gru_hidden=8, num_envs=n, num_steps=t, seq_len=length,
                       num_minibatches=1, total_timesteps=t * n)
    parts, state, traj, h0 = _rollout(config)
    starts = np.asarray(traj.start)
    assert starts[1:].any() and (starts[1:] & (np.arange(1, t) % length != 0)[:, None]).any()  # starts inside chunks
    params, hp = state.params, HParams.from_config(config)
    _, batch = jax.jit(lambda s: recurrent.make_batch(parts, s, (traj, h0), hp))(state)
    assert batch.obs.obs.shape[:2] == (length, (t // length) * n) and batch.obs.h0.shape == ((t // length) * n, 8)
    whole, _ = recurrent.unroll(parts.network, params, recurrent.Sequences(traj.obs, traj.start, h0))
    chunked, _ = recurrent.unroll(parts.network, params, batch.obs)
    np.testing.assert_allclose(np.asarray(chunked), np.asarray(recurrent.chunk(whole, length)), atol=1e-6)
    # the first chunk of every environment starts from the rollout's own first hidden state; the others do not
    np.testing.assert_array_equal(np.asarray(batch.obs.h0[:n]), np.asarray(h0))
    assert np.abs(np.asarray(batch.obs.h0[n:])).max() > 1e-3
    np.testing.assert_array_equal(np.asarray(batch.action), np.asarray(recurrent.chunk(traj.action, length)))


def test_two_shards_of_a_chunked_gru_emulated_on_one_device_match_the_one_device_program():
    """Data parallelism: the per-device body with its real collectives as 2 shards (``vmap`` over the
    named axis), time chunks, observation normalisation and the adaptive KL penalty on."""
    config = PPOConfig(env="CartPole-v1", policy="gru", gru_hidden=16, num_envs=8, num_steps=32, seq_len=8,
                       num_minibatches=2, update_epochs=2, total_timesteps=8 * 32 * 3, kl_penalty="adaptive",
                       normalize_obs=True)
    key, hp = jax.random.key(1), HParams.from_config(config)
    two_shards = jax.vmap(sharded_trainer(config, 2).train, in_axes=(None, None), axis_name=AXIS, axis_size=2)
    states, two = jax.jit(two_shards)(key, hp)
    one_state, one = jax.jit(make_trainer(config).train)(key, hp)
    assert states.hidden.shape == (2, 4, 16)  # each shard carries the hidden state of its 4 environments
    np.testing.assert_array_equal(np.concatenate(list(states.obs)), np.asarray(one_state.obs))
    for name in ("charts/episodic_return", "charts/episodic_length", "charts/episodes", "losses/epochs"):
        np.testing.assert_array_equal(two[name][0], two[name][1], err_msg=name)
        np.testing.assert_array_equal(two[name][0], np.asarray(one[name]), err_msg=name)
    for name in ("losses/policy_loss", "losses/value_loss", "losses/entropy", "losses/approx_kl", "losses/kl_coef",
                 "losses/post_update_kl"):  # gradients summed in another order: float tolerance
        np.testing.assert_allclose(two[name][0], np.asarray(one[name]), rtol=1e-4, atol=1e-6, err_msg=name)
    for a, b in zip(jax.tree.leaves(one_state.params), jax.tree.leaves(states.params)):
        np.testing.assert_allclose(np.asarray(b[0]), np.asarray(a), rtol=1e-4, atol=1e-6)


def test_gru_configuration_errors_are_one_line():
    with pytest.raises(ConfigError, match="policy: got 'lstm'; accepted: mlp, gru"):
        make_trainer(PPOConfig(policy="lstm"))
    with pytest.raises(ConfigError, match=r"num_minibatches: 4 does not divide the 6 sequences \(num_envs = 6 x "
                                          r"num_steps / seq_len = 1\), and a recurrent policy's minibatches"):
        make_trainer(PPOConfig(policy="gru", num_envs=6, num_minibatches=4, num_steps=8, total_timesteps=48))
    # cut into chunks of 4 steps, the same rollout has 12 sequences: 4 minibatches of 3
    make_trainer(PPOConfig(policy="gru", num_envs=6, num_minibatches=4, num_steps=8, seq_len=4, total_timesteps=48))
    with pytest.raises(ConfigError, match="seq_len: 3 does not divide num_steps = 8; accepted: 0 .whole rollouts. or "
                                          "a divisor of num_steps such as 1, 2, 4, 8"):
        make_trainer(PPOConfig(policy="gru", num_envs=4, num_minibatches=1, num_steps=8, seq_len=3, total_timesteps=32))
    with pytest.raises(ConfigError, match="seq_len: got 4, but policy mlp has no sequences; accepted: 0, or policy gru"):
        make_trainer(PPOConfig(seq_len=4))
    with pytest.raises(ConfigError, match="seq_len: got -1; accepted: an integer >= 0"):
        make_trainer(PPOConfig(policy="gru", seq_len=-1))
    with pytest.raises(ConfigError, match="shared_torso: got True, but policy gru"):
        make_trainer(PPOConfig(policy="gru", shared_torso=True))
    # data parallelism: each device re-runs an equal share of every minibatch's sequences
    with pytest.raises(ConfigError, match="num_minibatches: minibatches of 2 sequences cannot be split evenly over 4 "
                                          r"devices; accepted: num_envs \* num_steps / seq_len / num_minibatches a "
                                          "multiple of 4"):
        check_shards(PPOConfig(policy="gru", num_envs=8, num_minibatches=4), 4)
    check_shards(PPOConfig(policy="gru", num_envs=8, num_minibatches=4, num_steps=128, seq_len=64), 4)


@pytest.fixture(scope="module")
def memory_runs():
    """Two seeds of the GRU and two of the MLP on MemoryChain, each pair vmapped in one program."""
    out = {}
    # the GRU re-runs chunks of 8 steps: episodes (6 steps) cross chunk boundaries, so remembering the
    # context needs the hidden state each chunk starts from
    for name, config in (("gru", MEMORY.replace(seq_len=8)), ("mlp", MEMORY.replace(policy="mlp"))):
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


def test_sweep_command_with_a_recurrent_policy(tmp_path):
    """``purejaxppo sweep --policy gru``: seeds x learning rates of a chunked GRU, vmapped in one program."""
    out = tmp_path / "sweep"
    proc = run_main("sweep", "--env", "MemoryChain-bsuite", "--preset", "none", "--policy", "gru", "--gru-hidden", "8",
                    "--seq-len", "8", "--num-envs", "4", "--num-steps", "16", "--num-minibatches", "2",
                    "--update-epochs", "1", "--total-timesteps", str(4 * 16 * 3), "--num-seeds", "2",
                    "--grid", "lr=1e-3,3e-3", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 2 and {float(r["lr"]) for r in rows} == {1e-3, 3e-3}
    config = json.loads((out / "config.json").read_text())
    assert (config["policy"], config["seq_len"], config["sweep"]["num_seeds"]) == ("gru", 8, 2)
    npz = np.load(out / "metrics.npz")
    policy_loss = npz["losses__policy_loss"]
    assert policy_loss.shape == (2, 2, 3) and np.isfinite(policy_loss).all()
    assert not np.array_equal(policy_loss[0], policy_loss[1])  # the two learning rates train differently
