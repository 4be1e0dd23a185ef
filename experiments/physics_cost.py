"""What one rollout's physics costs through purejaxppo's environment adapter and through Brax's own
training wrappers, from the same first states and with the same actions.

    python experiments/physics_cost.py --task hopper --backend mjx --json results/speed/cpu_xeon_physics_hopper_mjx.json

Both step ``--envs`` environments ``--steps`` times inside one compiled program, starting from states
just reset, and return every observation and reward (nothing left for XLA to drop):

* ``brax``: the task under ``brax.envs.training.wrap`` (episode limit 1000, ``AutoResetWrapper``: an
  ended environment goes back to the first state it was reset to), as Brax's PPO trainer steps it;
* ``purejaxppo, reset_ratio R``: purejaxppo's vector step (``envs/vector.py``), a fresh random reset
  for every ended environment (R = 1) or one per R environments (optimistic resets).

Each runs under two action sequences: all zeros, and uniform in [-1, 1] (drawn once). Median of
``--repeat`` calls after one to compile. A physics step's cost depends on the states and actions
(MJX's constraint solver iterates until it converges), which is why two trainers whose policies
behave differently pay different prices for the same number of steps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp


def timed(fn, *args, repeat: int) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", default="hopper")
    p.add_argument("--backend", default="mjx")
    p.add_argument("--envs", type=int, default=256)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--reset-ratios", type=int, nargs="+", default=[1, 256])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json")
    args = p.parse_args()

    from brax import envs

    from purejaxppo import PPOConfig
    from purejaxppo.core.train import make_parts

    n, t = args.envs, args.steps
    wrapped = envs.training.wrap(envs.get_environment(args.task, backend=args.backend), episode_length=1000)
    first = jax.jit(wrapped.reset)(jax.random.split(jax.random.PRNGKey(0), n))
    action_size = wrapped.action_size

    def brax_steps(actions):
        def one(state, a):
            state = wrapped.step(state, a)
            return state, (state.obs, state.reward)

        return jax.lax.scan(one, first, actions)[1]

    def ours(reset_ratio):
        config = PPOConfig(env=f"brax/{args.task}-{args.backend}", num_envs=n, num_steps=t, num_minibatches=1,
                           total_timesteps=n * t, reset_ratio=reset_ratio, clip_actions=True)  # actions as given
        parts = make_parts(config)
        _, env_state = jax.jit(jax.vmap(parts.env.reset))(jax.random.split(jax.random.key(0), n))

        def steps(actions):
            keys = jax.random.split(jax.random.key(1), (t, n))

            def one(state, x):
                out = parts.vstep(x[0], state, x[1])
                return out[1], (out[0], out[2])

            return jax.lax.scan(one, env_state, (keys, actions))[1]

        return steps

    actions = {"zero": jnp.zeros((t, n, action_size)),
               "uniform": jax.random.uniform(jax.random.key(2), (t, n, action_size), minval=-1.0, maxval=1.0)}
    programs = {"brax": brax_steps, **{f"purejaxppo, reset_ratio {r}": ours(r) for r in args.reset_ratios}}
    rows = []
    for kind, a in actions.items():
        for name, fn in programs.items():
            seconds = timed(jax.jit(fn), a, repeat=args.repeat)
            rows.append({"actions": kind, "stepper": name, "ms": 1e3 * seconds, "env_steps_per_s": n * t / seconds})
            print(f"{kind:<8} {name:<32} {1e3 * seconds:9.1f} ms  {n * t / seconds:>10,.0f} env steps/s", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": "python experiments/physics_cost.py " + " ".join(sys.argv[1:]),
                       "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                       "device": str(jax.devices()[0]), "date": time.strftime("%Y-%m-%d", time.gmtime()),
                       "loadavg": os.getloadavg(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
