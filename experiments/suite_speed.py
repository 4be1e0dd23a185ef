"""Steps per second of each JAX environment suite through purejaxppo's adapter, and of PPO training on it.

For each name (a suite whose extra is not installed is skipped), and each ``--resets`` layout
(:mod:`purejaxppo.core.tuning`: ``all`` computes every environment's reset state at every step,
gymnax's own step; ``ended`` only the ended environments'):
  * env: 64 environments x 16 steps of random actions through the vector step the trainer uses
    (automatic reset, the final observation kept), one compiled ``lax.scan``, run ``--repeats`` times;
  * train: ``make_train`` at 64 environments x 16 steps per update (4 minibatches, 4 epochs, the
    default 64x64 networks on the flat observation), ``--updates`` updates in one compiled call, with
    the backend's layout and that ``resets``;
  * random: the mean return of uniformly random actions, 64 environments x ``--random-steps`` steps.
Timings exclude compilation (reported apart) and are the best of ``--repeats`` calls. gymnax's
CartPole-v1 runs first as the reference. ``--json FILE`` writes every figure.

    python experiments/suite_speed.py                    # about 20 minutes on 2 CPU cores
    python experiments/suite_speed.py --names jumanji/Snake-v1 --resets ended
"""

from __future__ import annotations

import argparse
import json
import platform
import time

NAMES = ("CartPole-v1", "xminigrid/MiniGrid-Empty-8x8", "navix/Navix-Empty-8x8-v0", "jumanji/Snake-v1",
         "jumanji/Game2048-v1", "craftax/Craftax-Classic-Symbolic-v1", "craftax/Craftax-Symbolic-v1",
         "playground/CartpoleBalance")
NUM_ENVS, NUM_STEPS = 64, 16


def best_of(call, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def env_speed(name: str, repeats: int, resets: str) -> tuple[float, float]:
    """``(compile seconds, env steps per second)`` of random actions through the vector step."""
    import jax

    from purejaxppo.envs import make_env
    from purejaxppo.envs.vector import make_vector_step

    env, _ = make_env(name)
    vstep = make_vector_step(env, "clip", 1, resets)

    def random_action(key):
        if env.action_kind == "discrete":
            return jax.random.randint(key, (NUM_ENVS,), 0, env.num_actions)
        return jax.random.uniform(key, (NUM_ENVS, env.action_dim), minval=-1.0, maxval=1.0)

    def rollout(key):
        _, state = jax.vmap(env.reset)(jax.random.split(key, NUM_ENVS))

        def one(state, key):
            act_key, step_key = jax.random.split(key)
            obs, state, reward, *_ = vstep(jax.random.split(step_key, NUM_ENVS), state, random_action(act_key))
            return state, reward.sum() + obs.sum()

        return jax.lax.scan(one, state, jax.random.split(key, NUM_STEPS))[1].sum()

    start = time.perf_counter()
    compiled = jax.jit(rollout).lower(jax.random.key(0)).compile()
    compile_s = time.perf_counter() - start
    seconds = best_of(lambda: compiled(jax.random.key(1)).block_until_ready(), repeats)
    return compile_s, NUM_ENVS * NUM_STEPS / seconds


def random_return(name: str, steps: int) -> tuple[float, int]:
    """``(mean return, episodes)`` of uniformly random actions: 64 environments x ``steps`` steps, over the
    episodes that end within them (the baseline the learning checks compare with)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from purejaxppo.envs import make_env

    env, _ = make_env(name)

    def rollout(key):
        _, state = jax.vmap(env.reset)(jax.random.split(key, NUM_ENVS))

        def one(carry, key):
            state, ret = carry
            act_key, step_key = jax.random.split(key)
            if env.action_kind == "discrete":
                action = jax.random.randint(act_key, (NUM_ENVS,), 0, env.num_actions)
            else:
                action = jax.random.uniform(act_key, (NUM_ENVS, env.action_dim), minval=-1.0, maxval=1.0)
            _, state, reward, terminated, truncated, _ = jax.vmap(env.step)(
                jax.random.split(step_key, NUM_ENVS), state, action)
            ret, done = ret + reward, terminated | truncated
            return (state, jnp.where(done, 0.0, ret)), jnp.where(done, ret, jnp.nan)

        return jax.lax.scan(one, (state, jnp.zeros(NUM_ENVS)), jax.random.split(key, steps))[1]

    ends = np.asarray(jax.jit(rollout)(jax.random.key(2)))
    return float(np.nanmean(ends)), int(np.isfinite(ends).sum())


def train_speed(name: str, updates: int, repeats: int, resets: str) -> tuple[float, float]:
    """``(compile seconds, env steps per second)`` of PPO training."""
    import dataclasses

    import jax

    from purejaxppo import PPOConfig, make_train
    from purejaxppo.core.tuning import tuning_for

    config = PPOConfig(env=name, num_envs=NUM_ENVS, num_steps=NUM_STEPS, num_minibatches=4, update_epochs=4,
                       total_timesteps=NUM_ENVS * NUM_STEPS * updates)
    start = time.perf_counter()
    train = make_train(config, tuning=dataclasses.replace(tuning_for(), resets=resets))
    compiled = jax.jit(train).lower(jax.random.key(0)).compile()
    compile_s = time.perf_counter() - start
    seconds = best_of(lambda: jax.block_until_ready(compiled(jax.random.key(1))), repeats)
    return compile_s, NUM_ENVS * NUM_STEPS * updates / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--names", nargs="+", default=list(NAMES))
    parser.add_argument("--resets", nargs="+", choices=("all", "ended"), default=["all", "ended"],
                        help="the resets layouts timed, each in turn (default both)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--updates", type=int, default=20, help="PPO updates per timed training call")
    parser.add_argument("--random-steps", type=int, default=1000, help="steps of the random-action baseline")
    parser.add_argument("--json", metavar="FILE", help="also write every figure here")
    args = parser.parse_args()

    import jax

    from purejaxppo.envs import suites
    from purejaxppo.errors import ConfigError

    print(f"{NUM_ENVS} envs x {NUM_STEPS} steps; best of {args.repeats}; compile seconds apart")
    print(f"{'name':40s} {'resets':>6s} {'env steps/s':>12s} {'train steps/s':>14s} {'compile env/train s':>20s} "
          f"{'random return (episodes)':>26s}")
    rows = []
    for name in args.names:
        suite = suites.suite_of(name)
        if suite is not None and not suite.installed():
            print(f"{name:40s} skipped: {suite.install}")
            continue
        try:
            for resets in args.resets:
                env_compile, env_sps = env_speed(name, args.repeats, resets)
                train_compile, train_sps = train_speed(name, args.updates, args.repeats, resets)
                row = dict(name=name, resets=resets, env_sps=env_sps, train_sps=train_sps, env_compile_s=env_compile,
                           train_compile_s=train_compile)
                print(f"{name:40s} {resets:>6s} {env_sps:12,.0f} {train_sps:14,.0f} {env_compile:12.1f} / "
                      f"{train_compile:5.1f}", end="" if resets == args.resets[-1] else "\n", flush=True)
                rows.append(row)
            mean, episodes = random_return(name, args.random_steps)
            rows[-1].update(random_return=mean, random_episodes=episodes)
            print(f" {mean:17.2f} ({episodes})", flush=True)
        except ConfigError as e:
            print(f"{name:40s} {e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(machine=platform.machine(), processor=platform.processor(), jax=jax.__version__,
                           backend=jax.default_backend(), date=time.strftime("%Y-%m-%d"), num_envs=NUM_ENVS,
                           num_steps=NUM_STEPS, updates=args.updates, repeats=args.repeats, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
