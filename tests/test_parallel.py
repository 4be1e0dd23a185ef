"""Data-parallel training of one agent: environments split over 4 fake CPU devices."""

import csv
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from purejaxppo import ConfigError, HParams, PPOConfig, make_train
from purejaxppo.scale.parallel import AXIS, check_shards, env_mesh, make_data_parallel_train, sharded_trainer

FOUR = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "purejaxppo.cli", *args], capture_output=True, text=True,
                          env=FOUR, timeout=500)

CARTPOLE = PPOConfig(env="CartPole-v1", num_envs=8, num_steps=32, num_minibatches=2, update_epochs=2,
                     total_timesteps=8 * 32 * 12)
# continuous actions, both normalisations, adaptive KL penalty on top of clipping, target-KL early stop
PENDULUM = PPOConfig(env="Pendulum-v1", num_envs=8, num_steps=32, num_minibatches=2, update_epochs=3,
                     total_timesteps=8 * 32 * 12, normalize_obs=True, normalize_reward=True,
                     kl_penalty="adaptive", target_kl=0.05)

SCRIPT = """
import json, sys
import numpy as np
import jax
from jax.sharding import PartitionSpec
from purejaxppo import PPOConfig, make_train
from purejaxppo.scale.parallel import make_data_parallel_train
assert jax.device_count() == 4, jax.devices()
out = {}
for name, config in json.loads(sys.argv[1]).items():
    config = PPOConfig.from_dict(config)
    key = jax.random.key(3)
    one_state, one = jax.jit(make_train(config))(key)  # the ordinary program, on device 0
    state, four = jax.jit(make_data_parallel_train(config))(key)
    assert state.obs.sharding.spec == PartitionSpec("envs") and len(state.obs.sharding.device_set) == 4
    assert state.obs.shape == one_state.obs.shape
    for k in one:
        out[f"{name}|one|{k}"] = np.asarray(one[k])
        out[f"{name}|four|{k}"] = np.asarray(four[k])
    for i, (a, b) in enumerate(zip(jax.tree.leaves(one_state.params), jax.tree.leaves(state.params))):
        out[f"{name}|one|param{i}"] = np.asarray(a)
        out[f"{name}|four|param{i}"] = np.asarray(b)
np.savez(sys.argv[2], **out)
"""


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory):
    path = tmp_path_factory.mktemp("dp") / "out.npz"
    configs = json.dumps({"cartpole": CARTPOLE.to_dict(), "pendulum": PENDULUM.to_dict()})
    proc = subprocess.run([sys.executable, "-c", SCRIPT, configs, str(path)], capture_output=True, text=True,
                          env=FOUR, timeout=500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = dict(np.load(path))
    return lambda env, which: {k.split("|")[2]: v for k, v in data.items() if k.startswith(f"{env}|{which}|")}


def test_data_parallel_cartpole_matches_one_device(four_devices):
    one, four = four_devices("cartpole", "one"), four_devices("cartpole", "four")
    # the same actions, environments and episodes: the action noise and env keys are the one-device run's
    for name in ("charts/episodic_return", "charts/episodic_length", "charts/episodes", "losses/clipfrac"):
        np.testing.assert_array_equal(four[name], one[name], err_msg=name)
    # the gradients are summed in a different order: float tolerance
    for name in ("losses/policy_loss", "losses/value_loss", "losses/entropy", "losses/approx_kl",
                 "losses/explained_variance"):
        np.testing.assert_allclose(four[name], one[name], rtol=1e-4, atol=1e-6, err_msg=name)
    for name in (k for k in one if k.startswith("param")):
        np.testing.assert_allclose(four[name], one[name], rtol=1e-4, atol=1e-6, err_msg=name)


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
    for name in ("charts/episodic_return", "charts/episodes", "losses/clipfrac"):
        np.testing.assert_array_equal(two[name][0], np.asarray(one[name]), err_msg=name)
    for name in ("losses/policy_loss", "losses/value_loss", "losses/entropy", "losses/approx_kl"):
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


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


DP_ARGS = ["--env", "CartPole-v1", "--preset", "none", "--num-envs", "8", "--num-steps", "32",
           "--num-minibatches", "2", "--update-epochs", "2", "--data-parallel", "--chunk-updates", "5"]


def test_data_parallel_cli_run_and_resume(tmp_path):
    out = tmp_path / "run"
    first = run_cli("train", *DP_ARGS, "--total-timesteps", str(8 * 32 * 15), "--checkpoint-every", "5",
                    "--out", str(out))
    assert first.returncode == 0, first.stderr
    assert "environments split over 4 devices" in first.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data_parallel_devices"] == 4 and summary["env_steps"] == 8 * 32 * 15
    full = read_csv(out / "metrics.csv")
    assert len(full) == 15
    # resume from the checkpoint at update 10: the same program continues to the same result
    shutil.rmtree(out / "checkpoints" / "15")
    again = run_cli("train", *DP_ARGS, "--total-timesteps", str(8 * 32 * 15), "--resume", "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert "resuming from the checkpoint at update 10" in again.stdout
    assert read_csv(out / "metrics.csv") == full

    bad = run_cli("train", *DP_ARGS, "--num-envs", "6", "--num-minibatches", "1", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2
    expected = ("purejaxppo train: error: num_envs: 6 environments cannot be split evenly over 4 devices; "
                "accepted: a multiple of 4")
    assert bad.stderr.strip().splitlines() == [expected]
