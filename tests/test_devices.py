"""Runs on 4 fake CPU devices: data parallelism and a sharded sweep against one device, and the
data-parallel command line with a resume (a recurrent policy). All of it runs in one child process
(``tests/four_devices.py``); the tests read what it wrote."""

import csv
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from purejaxppo import PPOConfig, sweep

# continuous actions, both normalisations, adaptive KL penalty on top of clipping, target-KL early stop
PENDULUM = PPOConfig(env="Pendulum-v1", num_envs=8, num_steps=32, num_minibatches=2, update_epochs=3,
                     total_timesteps=8 * 32 * 12, normalize_obs=True, normalize_reward=True,
                     kl_penalty="adaptive", target_kl=0.05)
SWEEP = PPOConfig(env="CartPole-v1", num_envs=4, num_steps=32, num_minibatches=2, update_epochs=2,
                  total_timesteps=4 * 32 * 6)
# a recurrent policy re-running chunks of 8 steps: its hidden state is sharded with the environments
DP_ARGS = ["--env", "CartPole-v1", "--preset", "none", "--num-envs", "8", "--num-steps", "32",
           "--num-minibatches", "2", "--update-epochs", "2", "--data-parallel", "--chunk-updates", "5",
           "--policy", "gru", "--gru-hidden", "16", "--seq-len", "8"]


@pytest.fixture(scope="module")
def child(tmp_path_factory):
    out = tmp_path_factory.mktemp("four_devices")
    # CartPole's data-parallel program is checked against one device in test_parallel.py (as 2 shards
    # emulated on one device) and run here over 4 devices through the command line
    specs = {"data_parallel": {"pendulum": PENDULUM.to_dict()},
             "sweep": SWEEP.to_dict(), "cli_args": DP_ARGS}
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    script = os.path.join(os.path.dirname(__file__), "four_devices.py")
    proc = subprocess.run([sys.executable, script, str(out), json.dumps(specs)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def four_devices(child):
    data = dict(np.load(child / "dp.npz"))
    return lambda env, which: {k.split("|")[2]: v for k, v in data.items() if k.startswith(f"{env}|{which}|")}


def test_data_parallel_pendulum_matches_one_device(four_devices):
    one, four = four_devices("pendulum", "one"), four_devices("pendulum", "four")
    assert np.isfinite(one["charts/episodic_return"]).sum() >= 1  # 200-step episodes: a few end
    np.testing.assert_array_equal(four["charts/episodes"], one["charts/episodes"])
    np.testing.assert_array_equal(four["losses/epochs"], one["losses/epochs"])  # same early stops
    np.testing.assert_allclose(four["losses/kl_coef"], one["losses/kl_coef"], rtol=1e-6)  # same KL decisions
    # continuous actions carry rounding differences forward, so the tolerance is looser
    for name in ("charts/episodic_return", "losses/value_loss", "losses/post_update_kl"):
        np.testing.assert_allclose(four[name], one[name], rtol=2e-3, atol=1e-4, err_msg=name)
    for name in (k for k in one if k.startswith("param")):
        np.testing.assert_allclose(four[name], one[name], rtol=1e-3, atol=1e-4, err_msg=name)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_sweep_sharded_over_four_fake_devices_agrees_with_one_device(child):
    four = {k.replace("|", "/"): v for k, v in np.load(child / "sweep.npz").items()}
    one = sweep(SWEEP, num_seeds=3, grid={"lr": [1e-3, 3e-3]}).metrics  # this process: one device
    assert jax.device_count() == 1
    assert four.keys() == one.keys()
    one = {k: v.reshape((6,) + v.shape[2:]) for k, v in one.items()}
    # 2 agents per device vs 6 on one: XLA compiles the two vmap widths differently, so the
    # agents agree to float rounding at first (the documented guarantee), not bit for bit
    for name in one:
        assert four[name].shape == one[name].shape, name
        np.testing.assert_allclose(four[name][:, :2], one[name][:, :2], rtol=1e-4, atol=1e-6, err_msg=name)


def test_pbt_population_sharded_over_four_fake_devices(child):
    record = np.load(child / "pbt.npz")  # 6 recurrent agents padded to 8, generations after updates 2 and 4
    assert record["parent"].shape == (2, 6) and (record["parent"] < 6).all()  # the padding is never chosen
    assert (record["parent"] != np.arange(6)).any() and record["lr"].shape == (3, 6)
    assert record["returns"].shape == (6, 6)


def test_data_parallel_cli_run_and_resume(child):
    cli = json.loads((child / "cli.json").read_text())
    first, again, bad = cli["first"], cli["again"], cli["bad"]
    assert first["returncode"] == 0, first["stderr"]
    assert "environments split over 4 devices" in first["stdout"]
    run = child / "dp_run"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["data_parallel_devices"] == 4 and summary["env_steps"] == 8 * 32 * 15
    config = json.loads((run / "config.json").read_text())
    assert (config["policy"], config["seq_len"]) == ("gru", 8)
    full = read_csv(child / "first_metrics.csv")
    assert len(full) == 15
    # resumed from the checkpoint at update 10: the same program continues to the same result
    assert again["returncode"] == 0, again["stderr"]
    assert "resuming from the checkpoint at update 10" in again["stdout"]
    assert read_csv(run / "metrics.csv") == full
    assert bad["returncode"] == 2
    expected = ("purejaxppo train: error: num_envs: 6 environments cannot be split evenly over 4 devices; "
                "accepted: a multiple of 4")
    assert bad["stderr"].strip().splitlines() == [expected]
    assert not (child / "bad").exists()
