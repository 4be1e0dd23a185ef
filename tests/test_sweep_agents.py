"""A sweep's agents kept and used: the population checkpoint, eval/load_policy of one agent, a run
seeded by an agent, and a sweep stopped by a signal then resumed to the same numbers."""

import json
import os
import signal

import jax
import numpy as np
import pytest
from helpers import run_main

from purejaxppo import PPOConfig, sweep
from purejaxppo.run import sweeps
from purejaxppo.run.policy import load_policy
from purejaxppo.run.sweep_agents import load_agent

FLAGS = ("--env", "CartPole-v1", "--num-envs", "4", "--num-steps", "32", "--num-minibatches", "2",
         "--update-epochs", "2", "--total-timesteps", str(4 * 32 * 12), "--num-seeds", "2", "--grid", "lr=0.001,0.01")


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """One CLI sweep (2 settings x 2 seeds, 12 updates), uninterrupted."""
    base = tmp_path_factory.mktemp("sweep")
    cwd = os.getcwd()
    os.chdir(base)
    try:
        done = run_main("sweep", *FLAGS, "--out", "whole")  # a relative --out, as typed (Orbax wants absolute paths)
    finally:
        os.chdir(cwd)
    assert done.returncode == 0, done.stderr
    return base / "whole"


def _npz(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def test_sweep_returns_every_agents_final_state():
    config = PPOConfig(env="CartPole-v1", num_envs=4, num_steps=32, num_minibatches=2, update_epochs=2,
                       total_timesteps=4 * 32 * 3)
    r = sweep(config, num_seeds=2, grid={"lr": [1e-3, 1e-2]})
    state, hp = r.agent(3)  # setting 1 (lr 0.01), seed 1
    assert float(hp.lr) == pytest.approx(1e-2) and int(state.update_step) == config.num_updates
    assert jax.tree_util.tree_leaves(r.states.params)[0].shape[0] == 4
    # agents are distinct: each has its own parameters
    first = [np.asarray(jax.tree_util.tree_leaves(r.agent(i)[0].params)[0]) for i in range(4)]
    assert all(not np.array_equal(first[0], other) for other in first[1:])
    with pytest.raises(Exception, match="agent: got 4; accepted: an agent index from 0 to 3"):
        r.agent(4)


def test_sweep_folder_keeps_the_population(swept):
    """``agents/`` holds the final population, the same arrays as the sweep's last checkpoint."""
    from purejaxppo.run.checkpoints import Checkpointer
    from purejaxppo.scale.agents import initial_carry
    from purejaxppo.scale.plan import make_plan, stack_hparams

    config, trainer, updates, state = load_agent(str(swept), 2)
    assert updates == 12 and config.lr == 0.01 and int(state.update_step) == 12
    plan = make_plan(trainer.config, 2, {"lr": [0.001, 0.01]})
    ckpt = Checkpointer(os.path.join(swept, "checkpoints"), read_only=True)
    try:
        step, carry, history, _ = ckpt.restore(initial_carry(trainer, plan.agent_keys(), stack_hparams(config, plan)))
    finally:
        ckpt.close()
    assert step == 12 and history["charts/episodic_return"].shape == (12, 4)
    for mine, saved in zip(jax.tree_util.tree_leaves(state.params), jax.tree_util.tree_leaves(carry.params)):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(saved)[2])


def test_eval_and_load_policy_of_one_agent(swept, monkeypatch):
    monkeypatch.chdir(swept.parent)
    done = run_main("eval", "--run", "whole", "--agent", "1", "--episodes", "3", "--deterministic")
    assert done.returncode == 0, done.stderr
    record = json.loads((swept / "evals" / "agent1.json").read_text())
    assert record["agent"] == 1 and record["update"] == 12 and len(record["returns"]) == 3
    policy = load_policy(str(swept), agent=1, deterministic=True)
    assert policy.config.lr == 0.001 and policy.step == 12
    obs = np.zeros((5, 4), np.float32)
    assert np.asarray(jax.jit(policy.act)(policy.params, obs, jax.random.key(0))).shape == (5,)


def test_agent_errors_are_one_line(swept, tmp_path):
    cases = [
        (("eval", "--run", swept), "holds a sweep of 4 agents, not a training run; accepted: a training run's folder, or one of the sweep's agents (eval --agent I"),
        (("eval", "--run", swept, "--agent", "4"), "agent: got 4; accepted: an agent index from 0 to 3"),
        (("train", "--agent", "1", "--out", tmp_path / "a"), "--agent: only applies with --init-from SWEEP"),
        (("train", "--init-from", swept, "--out", tmp_path / "b"), "--init-from: needs --agent I"),
        (("train", "--init-from", tmp_path, "--agent", "0", "--out", tmp_path / "c"), "is not a run folder"),
        (("train", "--init-from", swept, "--agent", "0", "--actor-hidden", "8", "--out", tmp_path / "d"),
         "--init-from: the agent's params does not fit this run's"),
        (("sweep", "--resume", "--out", swept, "--grid", "lr=0.1,0.2"), "--resume: the sweep continues with its saved "
         "plan; drop --grid"),
        (("sweep", "--resume", "--out", swept, "--num-envs", "8"), "--resume: resume: the config differs"),
    ]
    for args, message in cases:
        done = run_main(*args)
        assert done.returncode != 0 and message in done.stderr, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "d").exists()


def test_a_run_seeded_by_an_agent_starts_where_it_ended(swept, tmp_path):
    """``train --init-from SWEEP --agent I``: the agent's learned state in fresh environments; its
    first update's return is far above a fresh run's, and the settings are the agent's."""
    out = tmp_path / "seeded"
    done = run_main("train", "--init-from", swept, "--agent", "3", "--total-timesteps", str(4 * 32 * 2), "--out", out)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "config.json").read_text())["lr"] == 0.01
    assert json.loads((out / "run.json").read_text())["init_from"] == [str(swept), 3]
    with np.load(swept / "metrics.npz") as f:
        agent_last = float(f["charts__episodic_return"][1, 1, -1])
    fresh_first = float(np.load(swept / "metrics.npz")["charts__episodic_return"][1, 1, 0])
    seeded = [float(line.split(",")[1]) for line in (out / "metrics.csv").read_text().splitlines()[1:]
              if line.split(",")[1]]
    assert seeded[0] > fresh_first + 0.5 * (agent_last - fresh_first), (seeded, fresh_first, agent_last)


def test_an_interrupted_sweep_resumes_to_the_same_numbers(swept, tmp_path, monkeypatch):
    """A signal during a sweep stops it after a chunk's checkpoint; ``--resume`` ends it with the
    results and agents of the uninterrupted sweep, bit for bit."""
    out = tmp_path / "stopped"
    original = sweeps._Saving.__call__

    def signal_after_first_chunk(self, progress):
        self.stop.signum = signal.SIGINT  # as the handler records a signal
        original(self, progress)

    monkeypatch.setattr(sweeps._Saving, "__call__", signal_after_first_chunk)
    done = run_main("sweep", *FLAGS, "--out", out)
    assert done.returncode == 130 and "continue with: purejaxppo sweep --resume" in done.stderr, done.stderr
    assert not (out / "results.csv").exists() and (out / "checkpoints").is_dir()
    monkeypatch.setattr(sweeps._Saving, "__call__", original)
    done = run_main("sweep", "--resume", "--out", out)
    assert done.returncode == 0 and "resuming the sweep" in done.stdout, done.stderr
    whole, resumed = _npz(swept / "metrics.npz"), _npz(out / "metrics.npz")
    assert whole.keys() == resumed.keys()
    for name in whole:
        np.testing.assert_array_equal(whole[name], resumed[name], err_msg=name)
    assert (swept / "results.csv").read_text() == (out / "results.csv").read_text()
    a, b = load_agent(str(swept), 3)[3], load_agent(str(out), 3)[3]
    for x, y in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # a larger budget continues every agent from where it ended
    done = run_main("sweep", "--resume", "--out", out, "--total-timesteps", str(4 * 32 * 14), "--allow-safe-changes")
    assert done.returncode == 0, done.stderr
    longer = _npz(out / "metrics.npz")
    assert longer["charts__episodic_return"].shape[-1] == 14
    np.testing.assert_array_equal(longer["losses__value_loss"][..., :12], whole["losses__value_loss"])


def test_sweep_curve_bands_are_the_range_seen():
    """The sweep plot's band is min-max over seeds: never past what an environment gives (CartPole's 500)."""
    from purejaxppo.run.results import curve_band

    returns = np.array([[10.0, 500.0, np.nan], [30.0, 200.0, 8.0], [20.0, 500.0, np.nan]])
    mean, low, high = curve_band(returns)
    np.testing.assert_allclose(mean, [20.0, 400.0, 8.0])
    np.testing.assert_array_equal(low, [10.0, 200.0, 8.0])
    np.testing.assert_array_equal(high, [30.0, 500.0, 8.0])
    assert high.max() <= 500.0  # mean + 1.96 std / sqrt(3) would give 561 at the second update


def test_an_interrupted_pbt_sweep_resumes_to_the_same_numbers(tmp_path, monkeypatch):
    """The same for a PBT population: the checkpoint carries PBT's state (key, hyperparameters,
    fitness), so selection and exploration continue as if it never stopped."""
    flags = ("--env", "CartPole-v1", "--num-envs", "4", "--num-steps", "16", "--num-minibatches", "1",
             "--update-epochs", "1", "--total-timesteps", str(4 * 16 * 8), "--pbt", "--pbt-interval", "2",
             "--sample", "lr=log-uniform:1e-4:1e-2", "--num-samples", "4")
    whole, out = tmp_path / "whole", tmp_path / "stopped"
    assert run_main("sweep", *flags, "--out", whole).returncode == 0
    original = sweeps._Saving.__call__

    def signal_at_update_4(self, progress):
        if progress.done >= 4:
            self.stop.signum = signal.SIGTERM
        original(self, progress)

    monkeypatch.setattr(sweeps._Saving, "__call__", signal_at_update_4)
    done = run_main("sweep", *flags, "--out", out)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    monkeypatch.setattr(sweeps._Saving, "__call__", original)
    assert run_main("sweep", "--resume", "--out", out).returncode == 0
    m1, m2 = _npz(whole / "metrics.npz"), _npz(out / "metrics.npz")
    for k in m1:
        np.testing.assert_array_equal(m1[k], m2[k], err_msg=k)
    for name in ("lineage.csv", "results.csv"):
        assert (whole / name).read_text() == (out / name).read_text(), name
    a, b = _npz(whole / "pbt.npz"), _npz(out / "pbt.npz")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
