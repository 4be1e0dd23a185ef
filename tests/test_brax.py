"""Brax tasks on gymnax 1.0 semantics: the final observation kept for the truncation bootstrap (a
check Brax's own AutoResetWrapper fails), termination apart from truncation, action repeat, the
presets and backend names, the CLI end to end on MJX (train, summary versions, checkpoint and resume,
eval with a GIF)."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("brax")

from brax.envs.wrappers.training import AutoResetWrapper, EpisodeWrapper  # noqa: E402
from helpers import run_main  # noqa: E402

from purejaxppo import preset  # noqa: E402
from purejaxppo.cli import build_parser, resolve_config  # noqa: E402
from purejaxppo.core.presets import preset_name_for  # noqa: E402
from purejaxppo.envs import brax_envs, make_env  # noqa: E402
from purejaxppo.envs.brax_envs import BraxEnv  # noqa: E402
from purejaxppo.errors import ConfigError  # noqa: E402

LIMIT = 12  # a short time limit: the pendulum is still up when it is reached
TASK, BACKEND = "inverted_pendulum", "spring"  # the fastest backend to compile and step


@pytest.fixture(scope="module")
def pendulum():
    return BraxEnv(TASK, BACKEND, max_steps=LIMIT)


def _actions(n):
    return 0.3 * jnp.sin(jnp.arange(n, dtype=jnp.float32))[:, None]  # small pushes: no fall within LIMIT steps


def _true_observations(env, key):
    """Brax's task stepped by hand, no wrapper: the observations an episode really goes through
    (its reset and step each compiled whole: run eagerly, every operation compiles on its own)."""
    raw = env.brax_env
    reset, step = jax.jit(raw.reset), jax.jit(raw.step)
    s = reset(jax.random.split(key)[0])  # gymnax resets with the first half of the split
    obs = [s.obs]
    for a in _actions(LIMIT):
        s = step(s, a)
        obs.append(s.obs)
    return np.stack(obs)


def _ours(env):
    """(final observations, observations after the step, truncated, terminated) of LIMIT steps."""
    key = jax.random.key(3)
    obs, state = env.reset(jax.random.split(key)[0], env.default_params)

    def step(state, xs):
        k, a = xs
        obs, state, r, te, tr, info = env.step(k, state, a, env.default_params)
        return state, (info["final_observation"], obs, tr, te)

    keys = jax.random.split(jax.random.key(4), LIMIT)
    return jax.lax.scan(step, state, (keys, _actions(LIMIT)))[1]


def _brax_autoreset(env):
    """The same episode through Brax's EpisodeWrapper + AutoResetWrapper: what a learner reading its
    state.obs at the end of an episode gets (its info keeps no other observation)."""
    wrapped = AutoResetWrapper(EpisodeWrapper(env.brax_env, episode_length=LIMIT, action_repeat=1))
    s = wrapped.reset(jax.random.split(jax.random.key(3))[0])

    def step(s, a):
        s = wrapped.step(s, a)
        return s, (s.obs, s.obs, s.info["truncation"] > 0, (s.done > 0) & (s.info["truncation"] == 0))

    return jax.lax.scan(step, s, _actions(LIMIT))[1]


def check_bootstrap_observation(true_obs, final_obs, truncated):
    """The observation a truncated step is bootstrapped from is the one the episode really reached."""
    truncated = np.asarray(truncated)
    assert truncated.sum() == 1 and truncated[-1], "one truncation, at the time limit"
    np.testing.assert_allclose(np.asarray(final_obs)[-1], true_obs[LIMIT], rtol=1e-5, atol=1e-5)


def test_the_bootstrap_reads_the_true_last_observation_and_brax_autoreset_does_not(pendulum):
    true_obs = _true_observations(pendulum, jax.random.key(3))
    assert true_obs.shape[1] == pendulum.observation_size  # read from the reset's shape, without running it
    final_obs, next_obs, truncated, terminated = _ours(pendulum)
    assert not np.asarray(terminated).any()
    check_bootstrap_observation(true_obs, final_obs, truncated)
    np.testing.assert_allclose(np.asarray(final_obs)[:-1], true_obs[1:LIMIT], rtol=1e-5, atol=1e-5)
    # after the limit the environment restarted: a fresh initial state, not the one reached
    assert not np.allclose(np.asarray(next_obs)[-1], true_obs[LIMIT], atol=1e-3)
    assert np.abs(np.asarray(next_obs)[-1]).max() < 0.02  # Brax's reset noise is within +-0.01

    b_obs, _, b_truncated, _ = _brax_autoreset(pendulum)
    with pytest.raises(AssertionError):  # Brax's wrapper hands back the cached first state instead
        check_bootstrap_observation(true_obs, b_obs, b_truncated)
    np.testing.assert_allclose(np.asarray(b_obs)[-1], true_obs[0], atol=1e-6)


def test_termination_is_kept_apart_from_truncation():
    env = BraxEnv(TASK, BACKEND, max_steps=1000)
    obs, state = env.reset(jax.random.key(0), env.default_params)
    step = jax.jit(lambda k, s, a: env.step(k, s, a, env.default_params))
    for t in range(200):  # pushing one way topples the pole well before the limit
        obs, state, r, te, tr, info = step(jax.random.key(t), state, jnp.ones(1))
        if te:
            break
    assert bool(te) and not bool(tr) and 5 < t < 200
    assert int(state.time) == 0  # and the episode restarted


def test_action_repeat_sums_rewards_and_counts_physics_steps():
    env = BraxEnv(TASK, BACKEND, max_steps=1000, action_repeat=3)
    _, state = jax.jit(env.reset)(jax.random.key(0), env.default_params)
    a = jnp.full((1,), 0.2)
    _, after, reward, te, tr, _ = jax.jit(env.step)(jax.random.key(1), state, a, env.default_params)
    s, total, brax_step = state.brax, 0.0, jax.jit(env.brax_env.step)  # Brax's own step, by hand
    for _ in range(3):
        s = brax_step(s, a)
        total += float(s.reward)
    assert int(after.time) == 3 and float(reward) == pytest.approx(total)
    np.testing.assert_allclose(np.asarray(after.brax.obs), np.asarray(s.obs), rtol=1e-5, atol=1e-6)


def test_names_backends_and_presets():
    assert brax_envs.parse_name("brax/hopper") == ("hopper", brax_envs.DEFAULT_BACKEND)
    assert brax_envs.parse_name("brax/inverted_double_pendulum-mjx") == ("inverted_double_pendulum", "mjx")
    with pytest.raises(ConfigError, match="did you mean hopper"):
        brax_envs.parse_name("brax/hoper")
    assert brax_envs.with_backend("brax/ant-spring", "generalized") == "brax/ant-generalized"
    with pytest.raises(ConfigError, match="accepted: generalized, positional, spring, mjx"):
        brax_envs.with_backend("brax/ant", "euler")
    with pytest.raises(ConfigError, match="not a Brax environment"):
        brax_envs.with_backend("CartPole-v1", "spring")
    assert preset_name_for("brax/hopper-spring") == "brax/hopper" and preset_name_for("Pong") is None
    # from Python as from --env: a task's preset on another backend
    assert preset("brax/hopper-spring") == preset("brax/hopper").replace(env="brax/hopper-spring")
    with pytest.raises(ConfigError, match=r"^preset: unknown preset 'brax/hopper-euler'"):
        preset("brax/hopper-euler")
    # Brax's notebook row for inverted_pendulum, translated: 1024 x 32 unrolls of 5 steps from 2048 envs
    c = preset("brax/inverted_pendulum")
    assert (c.num_envs, c.num_steps, c.num_minibatches, c.update_epochs) == (2048, 80, 32, 4)
    assert (c.reward_scale, c.gamma, c.action_dist, c.state_dependent_std) == (10.0, 0.97, "tanh", True)
    assert preset("brax/humanoid").num_steps == 160 and preset("brax/reacher").num_steps == 200
    env, _ = make_env("brax/reacher-spring")
    assert env.env.action_repeat == 4 and env.action_kind == "continuous"
    # only MJX's reset (a solve of the starting state) is costly: only the ended environments reset there
    assert not env.costly_reset and make_env("brax/reacher-mjx")[0].costly_reset
    assert "brax/ant-mjx" in brax_envs.names()
    # the command line's --brax-backend names the environment's backend, after the preset
    args = build_parser().parse_args(["train", "--env", "brax/inverted_pendulum", "--brax-backend", "spring"])
    config, preset_used = resolve_config(args)
    assert config.env == "brax/inverted_pendulum-spring" and preset_used == "brax/inverted_pendulum"
    # the flag and a name that already names a backend: the same one is accepted, another refused
    args = build_parser().parse_args(["train", "--env", "brax/inverted_pendulum-spring", "--brax-backend", "spring"])
    assert resolve_config(args)[0].env == "brax/inverted_pendulum-spring"
    args = build_parser().parse_args(["train", "--env", "brax/inverted_pendulum-spring", "--brax-backend", "mjx"])
    with pytest.raises(ConfigError, match=r"^--brax-backend: got 'mjx', but --env brax/inverted_pendulum-spring names "
                                          r"the 'spring' backend; accepted: one of the two"):
        resolve_config(args)


def test_cli_trains_the_default_mjx_backend_renders_and_resumes_bit_identically(tmp_path):
    """The command line end to end on Brax's default backend (MJX): train with checkpoints, versions in
    summary.json, an evaluation that renders a GIF, the backend flag's errors. MJX's state holds arrays
    with no elements, which Orbax refuses to write: the checkpoint stores stand-ins and the resume gives
    the arrays back. Stopped after update 2 of 4 and resumed, the run writes the uninterrupted run's rows."""
    flags = ["--env", "brax/inverted_pendulum", "--total-timesteps", "2048", "--num-envs", "8", "--num-steps", "64",
             "--num-minibatches", "4", "--update-epochs", "1", "--actor-hidden", "16", "--critic-hidden", "16",
             "--chunk-updates", "2", "--checkpoint-every", "2"]
    whole, part = tmp_path / "whole", tmp_path / "part"
    r = run_main("train", *flags, "--out", str(whole))
    assert r.returncode == 0, r.stderr
    assert "preset: brax/inverted_pendulum" in r.stdout
    summary = json.loads((whole / "summary.json").read_text())
    assert summary["env"] == "brax/inverted_pendulum"  # mjx: no suffix
    assert {"brax", "mujoco", "mujoco-mjx"} <= set(summary["versions"])
    assert np.isfinite(summary["final_return"])
    assert sorted(p.name for p in (whole / "checkpoints").iterdir() if p.name.isdigit()) == ["2", "4"]
    part.mkdir()
    for name in ("config.json", "run.json"):
        (part / name).write_text((whole / name).read_text())
    (part / "checkpoints").mkdir()
    shutil.copytree(whole / "checkpoints" / "2", part / "checkpoints" / "2")
    rows = (whole / "metrics.csv").read_text().splitlines()
    (part / "metrics.csv").write_text("\n".join(rows[:3]) + "\n")
    r = run_main("train", "--out", str(part), "--resume")
    assert r.returncode == 0, r.stderr
    assert "resuming from the checkpoint at update 2" in r.stdout
    assert (part / "metrics.csv").read_text().splitlines() == rows

    gif = tmp_path / "episode.gif"
    r = run_main("eval", "--run", str(whole), "--episodes", "2", "--render", str(gif))
    assert r.returncode == 0, r.stderr
    with Image.open(gif) as im:
        assert im.n_frames >= 5 and im.size == (320, 240)
    r = run_main("train", "--env", "brax/inverted_pendulum", "--brax-backend", "euler", "--out", str(tmp_path / "x"))
    assert r.returncode != 0 and "--brax-backend: got 'euler'; accepted" in r.stderr
    r = run_main("train", "--env", "CartPole-v1", "--brax-backend", "spring", "--out", str(tmp_path / "y"))
    assert r.returncode != 0 and "not a Brax environment" in r.stderr


def test_the_drawn_inverted_pendulum_shows_its_pole(pendulum):
    """The pole's frame sits at the cart's hinge: only its capsule, drawn as a segment, shows the
    pole (the GIF showed a dot on a line)."""
    _, state = jax.jit(pendulum.reset)(jax.random.key(0), pendulum.default_params)
    points = np.asarray(pendulum.body_positions(state))
    parents = pendulum.body_parents
    assert len(parents) == len(points)
    segments = [(points[parent], points[i]) for i, parent in enumerate(parents) if parent >= 0]
    heights = [abs(b[2] - a[2]) for a, b in segments]
    assert max(heights) == pytest.approx(0.6, abs=0.02)  # the upright pole, 0.6 m
