"""``purejaxppo eval`` and ``load_policy`` on the CartPole agent trained by the default command."""

import csv
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import program_reads, run_main
from PIL import Image

from purejaxppo.errors import ConfigError
from purejaxppo.run import programs
from purejaxppo.run.cache import ENV_VAR, default_cache_dir, resolve_cache_dir
from purejaxppo.run.policy import load_policy


def cli(*args, timeout=600, env=None):
    return subprocess.run([sys.executable, "-m", "purejaxppo.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def trained(cartpole_run):
    return cartpole_run


def test_eval_deterministic_scores_and_renders(trained, tmp_path):
    gif = tmp_path / "episode.gif"
    done = run_main("eval", "--run", str(trained), "--episodes", "16", "--deterministic", "--render", str(gif))
    assert done.returncode == 0, done.stderr
    assert "return: mean" in done.stdout and "min" in done.stdout and "max" in done.stdout
    record = json.loads((trained / "eval.json").read_text())
    assert record["episodes"] == 16 and len(record["returns"]) == 16 and record["deterministic"] is True
    assert record["mean"] >= 475, record
    assert record["mean"] == pytest.approx(np.mean(record["returns"]))
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.is_animated
        frames = im.n_frames
    # CartPole pays 1 per step: an episode of R steps gives R + 1 frames (first state .. last)
    assert frames == record["render"]["frames"] == int(record["render"]["return"]) + 1


def test_load_policy_acts_under_jit(trained):
    policy = load_policy(str(trained))
    assert policy.step == policy.config.num_updates
    act = jax.jit(policy.act)
    obs = jnp.zeros((5, 4))
    actions = act(policy.params, obs, jax.random.key(0))
    assert actions.shape == (5,) and set(np.asarray(actions).tolist()) <= {0, 1}
    single = act(policy.params, jnp.zeros(4), jax.random.key(0))
    assert single.shape == ()
    from purejaxppo.errors import CheckpointError

    with pytest.raises(CheckpointError, match=r"^step: got '4'; accepted: an update number \(an integer\)"):
        load_policy(str(trained), step="4")
    for shape in ((3,), (5, 6), (2, 5, 4)):
        with pytest.raises(ConfigError) as e:
            act(policy.params, jnp.zeros(shape), jax.random.key(0))
        assert str(e.value) == (f"policy.act: an observation of shape {shape}; accepted: [4] or [B, 4] (the flat "
                                "observation of CartPole-v1)")


def test_policy_act_takes_an_environments_own_observation_shape():
    """MinAtar's observations are [10, 10, 4]: act takes them flat or in that shape (with or
    without a batch axis), the same actions either way, and refuses another shape in one line."""
    from purejaxppo import HParams, PPOConfig
    from purejaxppo.core.train import make_trainer
    from purejaxppo.run.policy import PolicyParams, policy_act

    trainer = make_trainer(PPOConfig(env="Breakout-MinAtar", num_envs=4, num_steps=8, total_timesteps=64,
                                     num_minibatches=1))
    state = jax.jit(trainer.init)(jax.random.key(0), HParams.from_config(trainer.config))
    params = PolicyParams(params=state.params, obs_rms=state.obs_rms)
    act = jax.jit(policy_act(trainer))
    obs = jax.random.bernoulli(jax.random.key(1), 0.2, (3, 10, 10, 4)).astype(jnp.float32)
    key = jax.random.key(2)
    flat = act(params, obs.reshape(3, 400), key)
    np.testing.assert_array_equal(act(params, obs, key), flat)
    assert act(params, obs[0], key).shape == () and act(params, obs[0].reshape(400), key).shape == ()
    with pytest.raises(ConfigError) as e:
        act(params, obs[..., :3], key)
    assert str(e.value) == ("policy.act: an observation of shape (3, 10, 10, 3); accepted: [400] or [B, 400] (the flat "
                            "observation of Breakout-MinAtar, or its shape [10, 10, 4] with an optional batch axis)")


def test_policy_act_keeps_a_batch_of_one_whose_flat_shape_is_the_environments_own():
    """SimpleBandit's own observation shape is [1, 1]: a flat batch of one, [1, 1], stays a batch."""
    from purejaxppo import HParams, PPOConfig
    from purejaxppo.core.train import make_trainer
    from purejaxppo.run.policy import PolicyParams, policy_act

    trainer = make_trainer(PPOConfig(env="SimpleBandit-bsuite", num_envs=4, num_steps=8, total_timesteps=64,
                                     num_minibatches=1))
    assert tuple(trainer.env.obs_shape) == (1, 1)
    state = jax.jit(trainer.init)(jax.random.key(0), HParams.from_config(trainer.config))
    act = jax.jit(policy_act(trainer))
    params = PolicyParams(params=state.params, obs_rms=state.obs_rms)
    assert act(params, jnp.zeros((1, 1)), jax.random.key(1)).shape == (1,)
    assert act(params, jnp.zeros((2, 1)), jax.random.key(1)).shape == (2,)
    assert act(params, jnp.zeros(1), jax.random.key(1)).shape == ()


def test_eval_of_a_missing_step_and_bad_render(trained):
    done = run_main("eval", "--run", str(trained), "--step", "7")
    assert done.returncode == 2
    assert done.stderr.strip().startswith("purejaxppo eval: error: no checkpoint at update 7")
    done = run_main("eval", "--run", str(trained), "--render", "out.mp4")
    assert done.returncode == 2 and "accepted: a path ending in .gif" in done.stderr
    done = run_main("eval", "--run", str(trained), "--episodes", "0")
    assert done.returncode == 2 and "--episodes: 0 is out of range" in done.stderr


def test_the_default_command_learns_cartpole(trained):
    summary = json.loads((trained / "summary.json").read_text())
    with open(trained / "metrics.csv") as f:
        first = next(csv.DictReader(f))
    assert float(first["charts/episodic_return"]) < 60  # a random policy balances for ~20 steps
    assert summary["preset"] == "CartPole-v1" and summary["final_return"] > 450, summary


def test_compilation_cache_is_filled_and_can_be_turned_off(trained, tmp_path, monkeypatch):
    cache = tmp_path / "cache"  # a fresh process, as a user runs it: the cache starts empty
    done = cli("eval", "--run", str(trained), "--episodes", "2", env=dict(os.environ, **{ENV_VAR: str(cache)}))
    assert done.returncode == 0, done.stderr
    assert any(cache.iterdir())  # compiled programs were written
    off = tmp_path / "off"
    monkeypatch.setenv(ENV_VAR, str(off))
    done = run_main("eval", "--run", str(trained), "--episodes", "2", "--compilation-cache", "off")
    assert done.returncode == 0, done.stderr
    assert not off.exists()


def test_a_later_eval_loads_its_programs_and_scores_the_same(trained, tmp_path, monkeypatch):
    """Evaluation saves its programs (the episodes', the recording's); a later one loads them, and reads the
    initial state's shapes from the program training saved, so nothing is traced; the returns and the GIF
    are those of an evaluation without them."""
    cache = tmp_path / "cache"  # the training's saved programs (its initial state's), in a folder of this test
    shutil.copytree(os.path.join(os.environ[ENV_VAR], programs.FOLDER), cache / programs.FOLDER,
                    ignore=shutil.ignore_patterns("*.tmp"))  # not the files another worker is writing
    before = set(os.listdir(cache / programs.FOLDER))
    reads = program_reads(monkeypatch)

    def returns(*flags):
        reads.clear()
        gif = tmp_path / f"{len(os.listdir(tmp_path))}.gif"
        done = run_main("eval", "--run", str(trained), "--episodes", "3", "--seed", "4", "--render", str(gif), *flags)
        assert done.returncode == 0, done.stderr
        return json.loads((trained / "eval.json").read_text())["returns"], gif.read_bytes()

    first = returns("--compilation-cache", str(cache))
    # the initial state's program is read; the evaluation's and the recording's are new
    assert reads == [True, False, False]
    assert len(set(os.listdir(cache / programs.FOLDER)) - before) == 2
    second = returns("--compilation-cache", str(cache))
    assert reads == [True, True, True]
    without = returns("--compilation-cache", "off")
    assert reads == [] and first == second == without


def test_cache_folder_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == str(tmp_path / "purejaxppo" / "jax")
    assert resolve_cache_dir() == str(tmp_path / "purejaxppo" / "jax")
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    assert resolve_cache_dir() == str(tmp_path / "env")
    assert resolve_cache_dir(str(tmp_path / "flag")) == str(tmp_path / "flag")
    assert resolve_cache_dir("off") is None
    monkeypatch.setenv(ENV_VAR, "off")
    assert resolve_cache_dir() is None


@pytest.mark.parametrize("name", ["Acrobot-v1", "Pendulum-v1", "MountainCarContinuous-v0", "Breakout-MinAtar"])
def test_gif_of_each_drawable_environment(name, tmp_path):
    from purejaxppo import make_env
    from purejaxppo.run.render import write_gif

    env, _ = make_env(name)
    obs = np.stack([np.asarray(env.reset(jax.random.key(i))[0]) for i in range(4)])
    path = tmp_path / "x.gif"
    assert write_gif(str(path), name, env.obs_shape, obs) == 4
    with Image.open(path) as im:
        assert im.n_frames == 4 and im.size == (320, 240)
        assert len(np.unique(np.asarray(im.convert("RGB")).reshape(-1, 3), axis=0)) > 2  # something was drawn


def test_render_refuses_environments_it_cannot_draw():
    from purejaxppo.run.render import renderer

    with pytest.raises(ValueError, match="cannot draw Catch-bsuite; accepted: CartPole-v1"):
        renderer("Catch-bsuite", (10, 5))
