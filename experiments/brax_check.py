"""Brax on this machine: physics steps/s per backend, and a small-budget learning check.

    python experiments/brax_check.py --out results/brax            # both parts
    python experiments/brax_check.py --only speed --tasks hopper

Speed: ``--envs`` environments stepped with random actions through purejaxppo's episode
wrapper (auto-reset, time limit) in one compiled scan, per task and backend; compile time
apart. Learning: ``brax/inverted_pendulum`` with its Brax preset at a CPU-sized batch (256
environments x 40 steps, 8 minibatches), the mean return of the last episodes against the
task's maximum of 1000. Writes ``OUT/brax_check.json`` after every row (with ``--only``, the
other part's earlier rows are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import numpy as np

from purejaxppo import make_train, preset
from purejaxppo.envs import make_env
from purejaxppo.envs.brax_envs import BACKENDS
from purejaxppo.run.results import package_versions


def physics_speed(name: str, num_envs: int, steps: int) -> dict:
    env, _ = make_env(name)
    vstep = jax.vmap(env.step)

    @jax.jit
    def run(key):
        obs, state = jax.vmap(env.reset)(jax.random.split(key, num_envs))

        def body(state, k):
            ka, ks = jax.random.split(k)
            a = jax.random.uniform(ka, (num_envs, env.action_dim), minval=-1.0, maxval=1.0)
            _, state, r, te, tr, _ = vstep(jax.random.split(ks, num_envs), state, a)
            return state, r.sum() + te.sum() + tr.sum()

        return jax.lax.scan(body, state, jax.random.split(key, steps))[1].sum()

    t = time.perf_counter()
    jax.block_until_ready(run(jax.random.key(0)))
    compile_s = time.perf_counter() - t
    best = float("inf")
    for i in range(2):
        t = time.perf_counter()
        jax.block_until_ready(run(jax.random.key(i + 1)))
        best = min(best, time.perf_counter() - t)
    return {"env": name, "num_envs": num_envs, "steps_per_s": num_envs * steps / best, "first_call_s": compile_s}


def learning(name: str, total: int) -> dict:
    config = preset("brax/inverted_pendulum").replace(env=name, total_timesteps=total, num_envs=256, num_steps=40,
                                                      num_minibatches=8)
    t = time.perf_counter()
    train = jax.jit(make_train(config)).lower(jax.random.key(0)).compile()
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    _, metrics = train(jax.random.key(0))
    returns = np.asarray(jax.device_get(metrics["charts/episodic_return"]))
    train_s = time.perf_counter() - t
    return {"env": name, "env_steps": config.num_updates * config.batch_size, "compile_s": compile_s,
            "train_s": train_s, "steps_per_s": config.num_updates * config.batch_size / train_s,
            "final_return": float(np.nanmean(returns[-5:])), "best_return": float(np.nanmax(returns)),
            "returns": [None if np.isnan(r) else round(float(r), 1) for r in returns],
            "config": config.to_dict()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="results/brax")
    p.add_argument("--only", choices=("speed", "learning"), default=None)
    p.add_argument("--tasks", nargs="+", default=["inverted_pendulum", "hopper", "ant"])
    p.add_argument("--backends", nargs="+", default=list(BACKENDS))
    p.add_argument("--envs", type=int, default=64)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--learning-steps", type=int, default=2_000_000)
    p.add_argument("--learning-backend", default="positional")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    record = {"device": str(jax.devices()[0]), "machine": platform.processor() or platform.machine(),
              "cpus": os.cpu_count(), "versions": package_versions("brax/"), "speed": [], "learning": []}
    path = os.path.join(args.out, "brax_check.json")
    if os.path.exists(path):  # keep the part not run this time
        with open(path) as f:
            old = json.load(f)
        for part in ("speed", "learning"):
            if args.only not in (None, part):
                record[part] = old.get(part, [])

    def save():
        with open(path, "w") as f:
            json.dump(record, f, indent=1)

    if args.only in (None, "speed"):
        for task in args.tasks:
            for backend in args.backends:
                row = physics_speed(f"brax/{task}-{backend}", args.envs, args.steps)
                print(f"{row['env']:34s} {row['steps_per_s']:>12,.0f} steps/s  (first call {row['first_call_s']:.1f} s)",
                      flush=True)
                record["speed"].append(row)
                save()
    if args.only in (None, "learning"):
        row = learning(f"brax/inverted_pendulum-{args.learning_backend}", args.learning_steps)
        print(f"{row['env']}: {row['env_steps']:,} steps in {row['train_s']:.0f} s (+{row['compile_s']:.0f} s compile), "
              f"final return {row['final_return']:.1f}, best {row['best_return']:.1f} of 1000", flush=True)
        record["learning"].append(row)
        save()


if __name__ == "__main__":
    main()
