"""The JAX environment suites (purejaxppo.envs.suites) and ``--env package.module:factory``.

Per suite: a time-limit end is ``truncated`` (not ``terminated``) and keeps the observation the
suite's own step reached as ``final_obs``, while ``obs`` is the reset's; a true end is
``terminated`` (not ``truncated``). Then short learning checks. A suite's tests skip when its
extra is not installed.
"""

import copy
import functools
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_rollout, run_main

from purejaxppo import PPOConfig, make_train
from purejaxppo.envs import EnvAdapter, describe_envs, known_envs, make_env, register_env
from purejaxppo.errors import ConfigError

DATA = Path(__file__).parent / "data"


def flat(x):
    return np.asarray(x, np.float32).reshape(-1)


class Stepper:
    """One environment of ``adapter`` stepped ``limit`` times in one compiled scan, next to the suite's own step.

    The environment's params, the first state and the action are arguments of the compiled programs (one
    reset, one scan), so one compile serves every check of a suite."""

    def __init__(self, adapter: EnvAdapter, own_obs, limit: int, masked: bool = False):
        """``own_obs(key, state, action, params)``: the suite's observation after its own step from ``state``;
        the action taken is ``until_end``'s, or when it is -1 a uniformly random one (``masked``: among the
        actions the mask allows); continuous actions are zeros."""

        def at(params):
            env = copy.copy(adapter)
            env.params = params
            return env

        def choose(env, state, key, fixed):
            if env.action_kind == "continuous":
                return jnp.zeros((env.action_dim,))
            if masked:
                mask = env.action_mask(state)
                random = jax.random.choice(key, env.num_actions, p=mask / mask.sum())
            else:
                random = jax.random.randint(key, (), 0, env.num_actions)
            return jnp.where(fixed >= 0, fixed, random)

        def one(params, fixed, state, key):
            env = at(params)
            act_key, step_key = jax.random.split(key)
            action = choose(env, state, act_key, fixed)
            mask = env.action_mask(state) if env.action_kind == "discrete" else jnp.ones(())
            expected_final = jnp.reshape(own_obs(jax.random.split(step_key)[0], state, action, params), -1)
            obs, state, _, terminated, truncated, final_obs = env.step(step_key, state, action)
            out = dict(obs=obs, final_obs=final_obs, expected_final=expected_final.astype(jnp.float32),
                       terminated=terminated, truncated=truncated, time=state.time, mask=mask)
            return state, out

        def run(key, params, state, fixed):
            return jax.lax.scan(functools.partial(one, params, fixed), state, jax.random.split(key, limit))[1]

        self.adapter, self.limit = adapter, limit
        self.reset = jax.jit(lambda key, params: at(params).reset(key))
        self.run = jax.jit(run)

    def until_end(self, key, params=None, action: int = -1, state=None):
        """From ``state`` (default: a reset), step with ``params`` (default: the adapter's) until an episode
        ends; check what the adapter says against the suite's own step; returns ``(terminated, truncated,
        steps, action mask before the last step)``."""
        params = jax.tree_util.tree_map(np.asarray, self.adapter.params if params is None else params)  # one dtype
        reset_key, key = jax.random.split(key)
        state = self.reset(reset_key, params)[1] if state is None else state
        out = jax.tree_util.tree_map(np.asarray, self.run(key, params, state, jnp.int32(action)))
        ends = np.flatnonzero(out["terminated"] | out["truncated"])
        assert len(ends), "no episode end"
        t = ends[0]
        np.testing.assert_array_equal(out["obs"][:t], out["final_obs"][:t])  # no reset before the end
        np.testing.assert_array_equal(out["final_obs"][t], out["expected_final"][t])  # the suite's own last obs
        step_key = jax.random.split(jax.random.split(key, self.limit)[t])[1]
        reset_obs, _ = self.reset(jax.random.split(step_key)[1], params)  # gymnax resets with the step key's 2nd half
        np.testing.assert_array_equal(out["obs"][t], reset_obs)  # and the reset's first
        assert out["time"][t] == 0
        return bool(out["terminated"][t]), bool(out["truncated"][t]), int(t) + 1, out["mask"][t]


def learn(env, steps, **settings):
    """Mean episodic return of the first and the last 3 updates of a short PPO run (of those where an episode ended)."""
    config = PPOConfig(env=env, total_timesteps=steps, **{"num_envs": 16, "num_steps": 64, **settings})
    _, metrics = jax.jit(make_train(config))(jax.random.key(0))
    returns = np.asarray(metrics["charts/episodic_return"])
    returns = returns[np.isfinite(returns)]
    return returns[:3].mean(), returns[-3:].mean()


# ---- names, listing, errors ------------------------------------------------------------------------


def test_names_listing_and_unknown_tasks():
    names = known_envs()
    for name in ("craftax/Craftax-Symbolic-v1", "craftax/Craftax-Classic-Symbolic-v1", "xminigrid/MiniGrid-Empty-8x8",
                 "xminigrid/XLand-MiniGrid-R1-9x9", "navix/Navix-Empty-8x8-v0", "jumanji/Snake-v1",
                 "jumanji/Game2048-v1", "playground/CartpoleBalance"):
        assert name in names
    listing = run_main("envs")
    assert listing.returncode == 0
    for heading in ("# gymnax", "# brax", "# craftax", "# xminigrid", "# navix", "# jumanji", "# playground"):
        assert heading in listing.stdout.splitlines(), heading
    assert listing.stdout == describe_envs() + "\n"
    with pytest.raises(ConfigError, match=r"unknown jumanji task 'Snake-v2' \(did you mean Snake-v1"):
        make_env("jumanji/Snake-v2")
    with pytest.raises(ConfigError, match="suite's prefix"):
        register_env("navix/Mine-v0", lambda: None)


def test_a_missing_suite_names_its_extra(monkeypatch):
    from purejaxppo.envs import suites

    monkeypatch.setattr(suites.Suite, "installed", lambda self: False)
    with pytest.raises(ConfigError, match=r"needs the craftax extra .* pip install -e \"\.\[craftax\]\""):
        suites.make("craftax/Craftax-Classic-Symbolic-v1")
    assert '# craftax  (not installed: pip install -e ".[craftax]")' in suites.describe()


# ---- XLand-MiniGrid --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minigrid():
    pytest.importorskip("xminigrid")
    adapter, params = make_env("xminigrid/MiniGrid-Empty-5x5")
    own = lambda key, s, a, p: adapter.env.xminigrid.step(p.suite, s.inner, a).observation  # noqa: E731
    return adapter, Stepper(adapter, own, 105)


def test_minigrid_time_limit_is_a_truncation(minigrid):
    adapter, stepper = minigrid
    assert adapter.obs_shape == (7, 7, 2) and adapter.action_kind == "discrete"  # the agent's 7x7 view
    assert adapter.params.suite.max_steps == 100  # XLand-MiniGrid's own limit for this room
    # action 1 turns in place, which never reaches the goal
    terminated, truncated, steps, _ = stepper.until_end(jax.random.key(0), action=1)
    assert (terminated, truncated, steps) == (False, True, 100)


def test_minigrid_goal_is_a_termination(minigrid):
    _, stepper = minigrid
    terminated, truncated, steps, _ = stepper.until_end(jax.random.key(3))  # random moves
    assert (terminated, truncated) == (True, False) and steps < 100


def test_xland_needs_its_benchmark_on_disk(tmp_path, monkeypatch):
    pytest.importorskip("xminigrid")
    from purejaxppo.envs import xminigrid_envs

    monkeypatch.setenv("XLAND_MINIGRID_DATA", str(tmp_path))
    with pytest.raises(ConfigError, match="trivial-21k benchmark, which is not on disk .* never downloads"):
        xminigrid_envs.make("XLand-MiniGrid-R1-9x9")
    # a one-ruleset benchmark made here (the goal: stand next to a red ball) stands in for the downloaded one
    from xminigrid.benchmarks import save_bz2_pickle
    from xminigrid.core.constants import TILES_REGISTRY, Colors, Tiles
    from xminigrid.core.goals import AgentNearGoal
    from xminigrid.core.rules import EmptyRule

    ball = TILES_REGISTRY[Tiles.BALL, Colors.RED]
    goal = AgentNearGoal(tile=ball).encode()
    save_bz2_pickle({"goals": goal[None], "rules": EmptyRule().encode()[None, None],
                     "init_tiles": jnp.asarray(ball)[None, None], "num_rules": jnp.ones((1,), jnp.int32)},
                    xminigrid_envs.benchmark_path())
    env = xminigrid_envs.make("XLand-MiniGrid-R1-9x9")
    _, inner = jax.jit(env.suite_reset)(jax.random.key(0), env.default_params)
    # every reset draws its ruleset from the benchmark on disk (the termination on a goal is MiniGrid's, above)
    np.testing.assert_array_equal(np.asarray(inner.state.goal_encoding), np.asarray(goal))
    assert (np.asarray(inner.state.grid)[..., 0] == Tiles.BALL).sum() == 1


def test_minigrid_is_learned():
    pytest.importorskip("xminigrid")
    first, last = learn("xminigrid/MiniGrid-Empty-5x5", 40_000)
    # reward 1 - 0.9 t / 100 at the goal: the shortest paths give about 0.95; random walks far less
    assert last > 0.9 and last > first + 0.2, (first, last)


# ---- Navix -------------------------------------------------------------------------------------------


def test_navix_empty_room_is_learned_with_the_cnn_torso():
    pytest.importorskip("navix")
    # the agent's view [H, W, 3] through 3x3 convolutions; 40k steps, to 1.0 (the goal reached
    # in the fewest steps the return allows)
    first, last = learn("navix/Navix-Empty-5x5-v0", 40_000, torso="cnn", conv_channels=(8,))
    assert last > 0.95 and last > first + 0.2, (first, last)


def test_navix_truncation_and_termination():
    pytest.importorskip("navix")
    adapter, _ = make_env("navix/Navix-Empty-5x5-v0")
    own = lambda key, s, a, p: adapter.env.navix.step(s.inner, a).observation  # noqa: E731 - its public step
    stepper = Stepper(adapter, own, 105)
    # action 0 rotates in place until Navix's own limit (100 steps) ends the episode; random moves reach the goal
    assert stepper.until_end(jax.random.key(2), action=0)[:3] == (False, True, 100)
    assert stepper.until_end(jax.random.key(2))[:2] == (True, False)


# ---- Jumanji ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def snake():
    pytest.importorskip("jumanji")
    adapter, _ = make_env("jumanji/Snake-v1")
    own = lambda key, s, a, p: adapter.env.jumanji.step(s.inner, a)[1].observation.grid  # noqa: E731
    return adapter, Stepper(adapter, own, 14, masked=True)


def test_snake_time_limit_is_a_truncation(snake):
    adapter, stepper = snake
    assert adapter.obs_shape == (12, 12, 5) and adapter.num_actions == 4
    assert adapter.params.max_steps_in_episode == 4000  # Snake's own limit, applied by the adapter as a truncation
    small = adapter.params.replace(max_steps_in_episode=3)
    terminated, truncated, steps, _ = stepper.until_end(jax.random.key(0), small)
    assert (terminated, truncated, steps) == (False, True, 3)


def test_snake_hitting_the_wall_is_a_termination(snake):
    adapter, stepper = snake
    # action 0: straight up, into the top wall within 12 steps
    terminated, truncated, steps, mask = stepper.until_end(jax.random.key(3), action=0)
    assert (terminated, truncated) == (True, False) and steps <= 12
    assert not mask[0]  # the mask said so: moving up was not allowed


def test_game2048_ends_when_no_move_is_left_and_masks_actions():
    pytest.importorskip("jumanji")
    adapter, _ = make_env("jumanji/Game2048-v1")
    assert adapter.obs_shape == (4, 4) and adapter.num_actions == 4
    own = lambda key, s, a, p: adapter.env.jumanji.step(s.inner, a)[1].observation.board  # noqa: E731
    stepper = Stepper(adapter, own, 2000, masked=True)
    terminated, truncated, _, mask = stepper.until_end(jax.random.key(0))
    assert (terminated, truncated) == (True, False)
    assert mask.shape == (4,) and mask.dtype == bool and mask.any()  # the moves allowed before the last
    small = adapter.params.replace(max_steps_in_episode=5)
    terminated, truncated, steps, _ = stepper.until_end(jax.random.key(0), small)
    assert (terminated, truncated, steps) == (False, True, 5)


def test_game2048_is_learned():
    pytest.importorskip("jumanji")
    first, last = learn("jumanji/Game2048-v1", 400_000, num_envs=64, num_steps=32, normalize_reward=True)
    # uniformly random moves score 1069 on average (experiments/suite_speed.py, 426 episodes)
    assert last > 1400 and last > first + 500, (first, last)


def test_jobshop_multi_discrete_actions_respect_each_machines_mask():
    pytest.importorskip("jumanji")
    from purejaxppo import HParams
    from purejaxppo.core.train import init_state, make_parts

    adapter, _ = make_env("jumanji/JobShop-v0")
    assert adapter.action_kind == "multi_discrete" and adapter.action_nvec == (21,) * 10
    assert adapter.num_actions == 210 and adapter.obs_shape == (500,)  # every part but the mask, joined
    config = PPOConfig(env="jumanji/JobShop-v0", num_envs=4, num_steps=96, num_minibatches=2,
                       total_timesteps=4 * 96)
    parts = make_parts(config)

    def rollout(key):
        state = init_state(parts, key, HParams.from_config(config))
        return parts.policy.collect(parts, state, jax.random.key(1))[1]

    traj = jax.jit(rollout)(jax.random.key(0))
    mask = np.asarray(traj.mask).reshape(96, 4, 10, 21)
    action = np.asarray(traj.action)  # [T, N, 10]: a job (or 20: nothing) for each machine
    assert action.shape == (96, 4, 10)
    assert np.take_along_axis(mask, action[..., None], axis=-1).all()  # every machine's choice allowed
    assert np.asarray(traj.terminated).any() and not np.asarray(traj.truncated).any()  # schedules complete


# ---- Craftax -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def craftax():
    pytest.importorskip("craftax")
    adapter, params = make_env("craftax/Craftax-Classic-Symbolic-v1")  # the full game takes minutes to compile
    small = params.replace(suite=params.suite.replace(max_timesteps=4))
    own = lambda key, s, a, p: adapter.env.craftax.step_env(key, s.inner, a, p.suite)[0]  # noqa: E731
    return adapter, small, Stepper(adapter, own, 5)


def test_craftax_time_limit_is_a_truncation(craftax):
    adapter, small, stepper = craftax
    assert small.suite.max_timesteps == 4 and adapter.params.suite.max_timesteps == 10_000
    assert adapter.costly_reset  # a reset generates a world: only the ended environments reset
    terminated, truncated, steps, _ = stepper.until_end(jax.random.key(0), small, action=0)  # 0: no-op
    assert (terminated, truncated, steps) == (False, True, 4)


def test_craftax_death_is_a_termination_even_at_the_time_limit(craftax):
    _, small, stepper = craftax
    _, state = stepper.reset(jax.random.key(0), small)
    for steps_before in (0, 3):  # a death mid-episode, and one on the step the time limit ends
        dying = state.replace(time=jnp.full_like(state.time, steps_before), inner=state.inner.replace(
            player_health=jnp.zeros_like(state.inner.player_health),
            timestep=jnp.full_like(state.inner.timestep, steps_before)))  # the same dtypes: the same program
        terminated, truncated, steps, _ = stepper.until_end(jax.random.key(1), small, action=0, state=dying)
        assert (terminated, truncated, steps) == (True, False, 1)


def test_craftax_resets_of_the_ended_environments_only_are_every_environments_own(craftax):
    """Craftax marks its reset costly, so the default vector step generates worlds only for the
    environments whose episode ended: the same worlds, observations and flags, bit for bit, as
    generating every environment's and keeping the ended ones' (gymnax's step). A 4-step time limit
    ends all 8 episodes at once every 4 steps (8 passes of one reset)."""
    from purejaxppo.envs.vector import make_vector_step

    adapter, small, _ = craftax
    env = EnvAdapter(adapter.name, adapter.env, small)
    n, steps = 8, 9
    assert env.costly_reset
    want, got = (jax.jit(random_rollout(env, vstep, n, steps))(jax.random.key(0))
                 for vstep in (make_vector_step(env, "clip", 1, "all"), make_vector_step(env, "clip", 1)))
    assert np.asarray(want[3]).sum() == 2 * n  # every episode ended twice, at steps 4 and 8
    bits = lambda x: np.asarray(jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x)  # noqa: E731
    for a, b in zip(jax.tree_util.tree_leaves(want), jax.tree_util.tree_leaves(got)):  # the state holds a key
        np.testing.assert_array_equal(bits(a), bits(b))


# ---- MuJoCo Playground -----------------------------------------------------------------------------


def test_playground_time_limit_is_a_truncation():
    pytest.importorskip("mujoco_playground")
    adapter, params = make_env("playground/CartpoleBalance")
    assert adapter.action_kind == "continuous" and adapter.obs_shape == (5,) and params.max_steps_in_episode == 1000
    assert adapter.costly_reset  # a reset solves the model's starting state: only the ended environments reset
    own = lambda key, s, a, p: adapter.env.playground.step(s.inner, a).obs  # noqa: E731
    # zero forces; CartpoleBalance has no end of its own (the pole may fall and rise again): only the time limit
    terminated, truncated, steps, _ = Stepper(adapter, own, 5).until_end(
        jax.random.key(0), params.replace(max_steps_in_episode=3))
    assert (terminated, truncated, steps) == (False, True, 3)


def test_playground_cartpole_balance_is_learned():
    pytest.importorskip("mujoco_playground")
    # 1M steps at 64 x 64, lr 1e-3, gamma 0.995, observations and rewards normalised: 8 s of training here
    # (the command in docs/environments.md); each step's reward is at most 1, 1000 steps an episode
    first, last = learn("playground/CartpoleBalance", 1_000_000, num_envs=64, num_minibatches=8, lr=1e-3,
                        gamma=0.995, normalize_obs=True, normalize_reward=True)
    assert last > 950 and first < 500, (first, last)


def test_playground_preset_is_mujoco_playgrounds_own_brax_ppo_config():
    from purejaxppo.core.presets import preset

    c = preset("playground/CartpoleBalance")
    # dm_control_suite_params.brax_ppo_config: 2048 envs, batch 1024 x 32 minibatches of 30-step unrolls
    assert (c.num_envs, c.num_steps, c.num_minibatches, c.update_epochs) == (2048, 480, 32, 16)
    assert (c.gamma, c.lr, c.ent_coef, c.reward_scale, c.normalize_obs) == (0.995, 1e-3, 1e-2, 10.0, True)
    assert c.total_timesteps == 60_000_000 and c.critic_hidden == (256,) * 5 and c.activation == "silu"


def test_every_playground_task_has_playgrounds_own_settings_as_its_preset():
    """Every DM Control task Playground lists is ours, and its preset is what Playground's own
    ``brax_ppo_config`` gives it (read from the installed package, Brax's names translated: a
    training step of batch x minibatches unrolls over num_envs environments is one update of
    batch x minibatches x unroll / num_envs steps per environment)."""
    pytest.importorskip("mujoco_playground")
    from mujoco_playground import dm_control_suite
    from mujoco_playground.config import dm_control_suite_params

    from purejaxppo.core.presets import preset
    from purejaxppo.envs.playground_envs import TASKS

    assert sorted(TASKS) == sorted(dm_control_suite.ALL_ENVS)
    changed = set()
    for task in TASKS:
        theirs, ours = dm_control_suite_params.brax_ppo_config(task), preset(f"playground/{task}")
        assert theirs.action_repeat == 1 and theirs.episode_length == 1000, task  # the adapter's own
        want = dict(num_envs=theirs.num_envs, num_minibatches=theirs.num_minibatches,
                    num_steps=theirs.batch_size * theirs.num_minibatches * theirs.unroll_length // theirs.num_envs,
                    update_epochs=theirs.num_updates_per_batch, gamma=theirs.discounting, lr=theirs.learning_rate,
                    ent_coef=theirs.entropy_cost, reward_scale=theirs.reward_scaling,
                    normalize_obs=theirs.normalize_observations, total_timesteps=theirs.num_timesteps)
        assert {k: getattr(ours, k) for k in want} == want, task
        if (ours.gamma, ours.total_timesteps) != (0.995, 60_000_000):
            changed.add(task)
    assert changed == {"AcrobotSwingup", "AcrobotSwingupSparse", "BallInCup", "FingerSpin", "SwimmerSwimmer6",
                       "WalkerRun"}


# ---- your own environment: --env package.module:factory ---------------------------------------------


@pytest.fixture
def my_env_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(DATA))


def test_factory_env_learns_evaluates_and_resumes_from_the_command_line(my_env_on_path, tmp_path):
    flags = ["--env", "my_env:make", "--total-timesteps", "16384", "--num-envs", "4", "--num-steps", "64",
             "--num-minibatches", "4", "--update-epochs", "4", "--lr", "1e-3", "--chunk-updates", "16",
             "--checkpoint-every", "16"]
    whole, part = tmp_path / "whole", tmp_path / "part"
    r = run_main("train", *flags, "--out", str(whole))
    assert r.returncode == 0, r.stderr
    assert json.loads((whole / "config.json").read_text())["env"] == "my_env:make"
    rows = (whole / "metrics.csv").read_text().splitlines()
    column = rows[0].split(",").index("charts/episodic_return")
    returns = np.array([float(row.split(",")[column]) for row in rows[1:]])
    returns = returns[np.isfinite(returns)]
    # 8 steps of reward 1 for the right guess; guessing gives 4
    assert returns[-3:].mean() > 7.0 and returns[-3:].mean() > returns[:3].mean() + 2.0, returns
    r = run_main("eval", "--run", str(whole), "--episodes", "2")
    assert r.returncode == 0, r.stderr
    record = json.loads((whole / "eval.json").read_text())
    assert record["episodes"] == 2 and all(0 <= r <= 8 for r in record["returns"])  # 8 steps of at most 1
    part.mkdir()
    for name in ("config.json", "run.json"):
        (part / name).write_text((whole / name).read_text())
    (part / "checkpoints").mkdir()
    import shutil

    shutil.copytree(whole / "checkpoints" / "32", part / "checkpoints" / "32")  # the first of the 3 kept
    (part / "metrics.csv").write_text("\n".join(rows[:33]) + "\n")
    r = run_main("train", "--out", str(part), "--resume")
    assert r.returncode == 0, r.stderr
    assert (part / "metrics.csv").read_text().splitlines() == rows


@pytest.mark.parametrize("name, message", [
    ("no_such_module_here:make", "module no_such_module_here could not be imported (ModuleNotFoundError"),
    ("my_env:nope", "my_env has no attribute 'nope'"),
    ("my_env:NOT_CALLABLE", "NOT_CALLABLE is a int, not callable"),
    ("my_env:not_an_env", "not_an_env() returned int"),
    ("my_env:broken", "broken() failed (RuntimeError: no such level)"),
    ("my_env:bad_step", "the environment's reset or step failed (TypeError"),
    ("my_env:", "got 'my_env:'"),
])
def test_factory_errors_are_one_line(my_env_on_path, tmp_path, name, message):
    r = run_main("train", "--env", name, "--out", str(tmp_path / "x"))
    assert r.returncode == 2
    [line] = r.stderr.strip().splitlines()
    assert line.startswith("purejaxppo train: error: env: ") and message in line, line
    assert line.endswith("accepted: package.module:factory, where calling factory() returns a gymnax Environment "
                         "or an (env, env_params) pair"), line


def test_factory_env_from_python_is_found_in_the_working_directory_with_its_params(tmp_path, monkeypatch):
    from purejaxppo.core.train import make_parts

    (tmp_path / "sign_env_here.py").write_text((DATA / "my_env.py").read_text())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    env, params = make_env("sign_env_here:make_pair")  # (env, params): the factory's params are used
    assert params.max_steps_in_episode == 4 and env.obs_shape == (1,)
    # and by training (what it learns is checked from the command line, above)
    parts = make_parts(PPOConfig(env="sign_env_here:make_pair", num_envs=8, num_steps=32))
    assert parts.env.params.max_steps_in_episode == 4
