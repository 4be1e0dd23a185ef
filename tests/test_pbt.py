"""Population-based training (purejaxppo.scale.pbt): selection copies exactly the parents' learned state,
exploration stays within the search space's bounds and follows its distributions, PBT with selection off is
the plain sweep bit for bit, and on Probe-ActionReward (where a larger learning rate learns the rewarded
action sooner, so the best in the range is its top) the population's learning rate moves up."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import run_main

from purejaxppo import PPOConfig, make_trainer
from purejaxppo.core.config import HParams
from purejaxppo.errors import ConfigError
from purejaxppo.scale.agents import run_agents
from purejaxppo.scale.pbt import (
    PBTCarry,
    PBTConfig,
    check_pbt,
    explore,
    make_generation,
    run_pbt,
    truncation_parents,
)
from purejaxppo.scale.plan import Distribution, make_plan, stack_hparams

LR = {"lr": Distribution("log-uniform", (1e-5, 1e-2))}
PROBE = PPOConfig(env="Probe-ActionReward", num_envs=4, num_steps=4, num_minibatches=1, update_epochs=2,
                  total_timesteps=16 * 24)


@pytest.fixture(scope="module")
def probe():
    return make_trainer(PROBE)


def _leaves(tree):
    return [np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
            for x in jax.tree_util.tree_leaves(tree)]


def test_truncation_parents_bottom_copy_top_and_ties_never_copy():
    fitness = jnp.array([3.0, 1.0, 4.0, 2.0, -jnp.inf, 5.0, 0.0, 6.0])
    for seed in range(5):
        parents = np.asarray(truncation_parents(jax.random.key(seed), fitness, 0.25))
        assert set(parents[[4, 6]]) <= {5, 7}  # the two worst draw from the two best
        np.testing.assert_array_equal(np.delete(parents, [4, 6]), np.delete(np.arange(8), [4, 6]))
    tied = np.asarray(truncation_parents(jax.random.key(0), jnp.zeros(8), 0.25))
    np.testing.assert_array_equal(tied, np.arange(8))
    # every diverged agent is replaced, even beyond the bottom fraction
    many = jnp.array([-jnp.inf, -jnp.inf, -jnp.inf, 1.0, 2.0, 3.0, 4.0, 5.0])
    assert (np.asarray(truncation_parents(jax.random.key(1), many, 0.25))[:3] >= 6).all()


def test_selection_copies_exactly_the_parents_learned_state(probe):
    config, trainer = PROBE, probe
    n = 4
    space = {"lr": LR["lr"], "clip_eps": Distribution("uniform", (0.1, 0.3))}
    hparams = jax.tree_util.tree_map(lambda x: jnp.stack([x] * n), HParams.from_config(config))
    hparams = hparams.replace(lr=jnp.array([1e-4, 2e-4, 3e-4, 4e-4]), clip_eps=jnp.array([0.1, 0.15, 0.2, 0.25]))
    states = jax.jit(jax.vmap(trainer.init))(jax.random.split(jax.random.key(0), n), hparams)
    carry = PBTCarry(jax.random.key(1), hparams, return_sum=jnp.array([1.0, 8.0, 3.0, 4.0]),
                     episodes=jnp.ones(n), fitness=jnp.full(n, -jnp.inf))
    generation = jax.jit(make_generation(PBTConfig(fraction=0.25, resample_prob=0.0), space, n))
    new, carry, record = generation(states, carry)
    np.testing.assert_array_equal(record.parent, [1, 1, 2, 3])  # the worst (0) copies the best (1)
    for field in ("params", "opt_state", "obs_rms", "ret_rms", "kl", "update_step"):
        for a, b, c in zip(_leaves(getattr(new, field)), _leaves(getattr(states, field)), _leaves(getattr(new, field))):
            np.testing.assert_array_equal(a[0], b[1])  # agent 0 holds agent 1's learned state, bit for bit
            np.testing.assert_array_equal(c[1:], b[1:])  # the others keep theirs
    for field in ("env_state", "obs", "key", "episode_return", "hidden"):  # its own environments, memory and key
        for a, b in zip(_leaves(getattr(new, field)), _leaves(getattr(states, field))):
            np.testing.assert_array_equal(a, b)
    # hyperparameters: the parent's, explored (x0.8 or x1.25) only in the space's fields
    assert np.isclose(float(carry.hparams.lr[0]), [2e-4 * 0.8, 2e-4 * 1.25]).any()
    assert np.isclose(float(carry.hparams.clip_eps[0]), [0.15 * 0.8, 0.15 * 1.25]).any()
    np.testing.assert_array_equal(carry.hparams.lr[1:], hparams.lr[1:])
    np.testing.assert_array_equal(carry.hparams.gamma, hparams.gamma)
    np.testing.assert_array_equal(record.fitness, [1.0, 8.0, 3.0, 4.0])
    # an agent whose parameters became NaN is reported (fitness -inf) and replaced by the fittest
    broken = new.replace(params=jax.tree_util.tree_map(lambda x: x.at[3].set(jnp.nan), new.params))
    carry = carry._replace(return_sum=jnp.array([5.0, 6.0, 1.0, 9.0]), episodes=jnp.ones(n))
    fixed, _, record = generation(broken, carry)
    np.testing.assert_array_equal(record.diverged, [False, False, False, True])
    np.testing.assert_array_equal(record.parent, [0, 1, 2, 1])
    assert all(np.isfinite(x).all() for x in _leaves(fixed.params))


def test_exploration_respects_bounds_and_distributions():
    n = 8_000
    space = {"lr": Distribution("log-uniform", (1e-4, 1e-2)), "clip_eps": Distribution("uniform", (0.1, 0.3)),
             "ent_coef": Distribution("choice", (0.0, 0.01, 0.1))}
    base = jax.tree_util.tree_map(lambda x: jnp.full((n,), x), HParams.from_config(PPOConfig()))
    base = base.replace(lr=jnp.full(n, 9e-3), clip_eps=jnp.full(n, 0.11), ent_coef=jnp.full(n, 0.01))
    replaced = jnp.arange(n) % 2 == 0
    fresh = jax.jit(lambda key: explore(key, base, replaced, space, 1.0, (0.8, 1.25)))(jax.random.key(0))
    lr, clip, ent = (np.asarray(getattr(fresh, f))[::2] for f in ("lr", "clip_eps", "ent_coef"))
    assert lr.min() >= 1e-4 and lr.max() <= 1e-2 and clip.min() >= 0.1 and clip.max() <= 0.3
    assert abs(np.log10(lr).mean() - (-3.0)) < 0.04 and abs(clip.mean() - 0.2) < 0.004  # log-uniform, uniform
    assert set(np.unique(ent)) == {0.0, np.float32(0.01), np.float32(0.1)}
    assert np.allclose(np.bincount(np.searchsorted([0.0, 0.01, 0.1], ent, side="left").clip(0, 2)) / len(ent), 1 / 3,
                       atol=0.03)
    np.testing.assert_array_equal(np.asarray(fresh.lr)[1::2], np.float32(9e-3))  # agents not replaced are untouched
    moved = jax.jit(lambda key: explore(key, base, replaced, space, 0.0, (0.8, 1.25)))(jax.random.key(1))
    lr, clip, ent = (np.asarray(getattr(moved, f))[::2] for f in ("lr", "clip_eps", "ent_coef"))
    assert set(np.round(lr, 8)) == {np.round(np.float32(9e-3 * 0.8), 8), np.float32(1e-2)}  # x1.25 clipped to HIGH
    assert set(np.round(clip, 6)) == {np.round(np.float32(0.1), 6), np.round(np.float32(0.11 * 1.25), 6)}
    assert set(ent) == {0.0, np.float32(0.1)}  # a choice moves to a neighbour


def test_pbt_settings_checked_in_one_line():
    with pytest.raises(ConfigError, match="pbt fraction: got 0.7; accepted: a number in"):
        check_pbt(PBTConfig(fraction=0.7), LR, 8)
    with pytest.raises(ConfigError, match="selects no agent"):
        check_pbt(PBTConfig(fraction=0.1), LR, 4)
    with pytest.raises(ConfigError, match="does not divide the 8 agents"):
        check_pbt(PBTConfig(num_populations=3), LR, 8)


def test_selection_off_is_the_plain_sweep_bit_for_bit(probe):
    plan = make_plan(probe.config, 1, samples=LR, num_samples=3)
    hparams, keys = stack_hparams(probe.config, plan), plan.agent_keys()
    states, metrics, record = run_pbt(probe, keys, hparams, PBTConfig(interval=2, fraction=0.0), LR,
                                      jax.random.key(0), chunk_updates=24)
    plain_states, plain = run_agents(probe, keys, hparams, chunk_updates=24)
    assert record.parent.shape == (0, 3)
    for k in plain:
        np.testing.assert_array_equal(metrics[k], plain[k], err_msg=k)
    for a, b in zip(_leaves(states), _leaves(plain_states)):
        np.testing.assert_array_equal(a, b)


def test_sweep_command_pbt_moves_the_learning_rate_toward_the_best(tmp_path):
    out = tmp_path / "sw"
    r = run_main("sweep", "--pbt", "--pbt-interval", "3", "--pbt-resample-prob", "0", "--sample",
                 "lr=log-uniform:1e-5:1e-2", "--num-samples", "8", "--env", "Probe-ActionReward", "--num-envs", "4",
                 "--num-steps", "4", "--num-minibatches", "1", "--update-epochs", "2", "--total-timesteps", "384",
                 "--out", out, "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "pbt: 7 generations (updates 3, 6, 9, 12, 15, 18, ...)" in r.stdout
    lineage = (out / "lineage.csv").read_text().splitlines()
    assert lineage[0] == "generation,update,agent,parent,fitness,diverged,lr" and len(lineage) == 1 + 7 * 8
    assert (out / "hparams.png").stat().st_size > 0
    with np.load(out / "pbt.npz") as record:
        log_lr, parent = np.log10(record["hparams__lr"]), record["parent"]
    assert parent.shape == (7, 8) and (parent != np.arange(8)).any()
    assert log_lr[-1].mean() > log_lr[0].mean() + 0.5, log_lr.mean(axis=1)
    assert np.median(log_lr[-1]) > np.median(log_lr[0])
    r = run_main("sweep", "--pbt-interval", "3", "--env", "Probe-ActionReward", "--out", tmp_path / "x")
    assert r.returncode == 2 and "--pbt-interval: given without --pbt" in r.stderr
