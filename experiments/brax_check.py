"""Brax on this machine: physics steps/s per backend, fidelity to MuJoCo, small-budget learning.

    python experiments/brax_check.py --out results/brax            # every part
    python experiments/brax_check.py --only speed --tasks hopper
    python experiments/brax_check.py --only training
    python experiments/brax_check.py --only fidelity
    python experiments/brax_check.py --only learning --learning-task hopper --learning-steps 3000000

Speed: ``--envs`` environments stepped with random actions through purejaxppo's episode
wrapper (auto-reset, time limit) in one compiled scan, per task and backend; compile time
apart. Training: environment steps/s of whole PPO updates with each task's preset networks at
a CPU-sized batch (256 environments x 40 steps, 8 minibatches). Fidelity: each backend's body
positions against MuJoCo's own physics (the mjx backend) under the same actions from the same
states. Learning: a task (``--learning-task``, default inverted_pendulum) with its Brax preset
at the CPU-sized batch, the mean return of the last episodes against the return of uniformly
random actions. Writes ``OUT/brax_check.json`` after every row: the parts not run are kept,
and learning rows of other tasks always are.
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


def fidelity(task: str, backends: list[str], num_envs: int = 32, steps: int = 100,
             at: tuple[int, ...] = (1, 10, 30, 100)) -> list[dict]:
    """How far each backend's bodies move from MuJoCo's own physics (the mjx backend, which runs
    MuJoCo's solver: the reference the Gym-style tasks were written for). Every backend starts
    from the same reset states and receives the same uniformly random actions; after ``t``
    control steps, the mean distance between a body's position and its mjx position, and that
    distance over the mean distance the mjx bodies moved from their start (relative error), over
    the environments whose simulation stayed finite (the others are counted).
    Brax's own task definitions set the substeps per backend; the control step is the same."""
    from purejaxppo.envs.brax_envs import import_brax

    envs = import_brax()
    reset_keys = jax.random.split(jax.random.key(7), num_envs)
    size = envs.get_environment(task, backend="mjx").action_size
    actions = jax.random.uniform(jax.random.key(8), (steps, num_envs, size), minval=-1.0, maxval=1.0)

    def positions(backend: str) -> np.ndarray:  # [steps + 1, envs, bodies, 3]
        env = envs.get_environment(task, backend=backend)

        @jax.jit
        def run():
            first = jax.vmap(env.reset)(reset_keys)

            def body(s, a):
                s = jax.vmap(env.step)(s, a)
                return s, s.pipeline_state.x.pos

            _, pos = jax.lax.scan(body, first, actions)
            return jax.numpy.concatenate([first.pipeline_state.x.pos[None], pos])

        return np.asarray(run())

    ref = positions("mjx")
    moved = np.linalg.norm(ref - ref[:1], axis=-1).mean(axis=(1, 2))  # [steps + 1]
    rows = []
    for backend in backends:
        pos = ref if backend == "mjx" else positions(backend)
        finite = np.isfinite(pos).all(axis=(0, 2, 3))  # [envs]: the simulation never blew up
        err = np.linalg.norm(pos - ref, axis=-1)[:, finite].mean(axis=(1, 2))
        rows.append({"task": task, "backend": backend, "num_envs": num_envs, "steps": steps,
                     "nonfinite_envs": int((~finite).sum()), "start_error": float(err[0]),
                     "error": {str(t): float(err[t]) for t in at},
                     "relative_error": {str(t): float(err[t] / moved[t]) for t in at},
                     "mjx_moved": {str(t): float(moved[t]) for t in at}})
    return rows


def random_return(name: str, num_envs: int = 256, steps: int = 1000) -> float:
    """Mean return of the episodes that end within ``steps`` steps of ``num_envs`` environments
    under uniformly random actions in [-1, 1] (episodes still running at the end are left out)."""
    env, _ = make_env(name)
    vstep = jax.vmap(env.step)

    @jax.jit
    def run(key):
        _, state = jax.vmap(env.reset)(jax.random.split(key, num_envs))

        def body(carry, k):
            state, running, total, count = carry
            ka, ks = jax.random.split(k)
            a = jax.random.uniform(ka, (num_envs, env.action_dim), minval=-1.0, maxval=1.0)
            _, state, r, te, tr, _ = vstep(jax.random.split(ks, num_envs), state, a)
            running = running + r
            done = te | tr
            total = total + jax.numpy.where(done, running, 0.0).sum()
            return (state, jax.numpy.where(done, 0.0, running), total, count + done.sum()), None

        zeros = jax.numpy.zeros(num_envs)
        (_, _, total, count), _ = jax.lax.scan(body, (state, zeros, 0.0, 0), jax.random.split(key, steps))
        return total / count

    return float(run(jax.random.key(123)))


def cpu_config(name: str, total: int):
    """The task's Brax preset at a CPU-sized batch: 256 environments x 40 steps, 8 minibatches."""
    return preset(name.rsplit("-", 1)[0]).replace(env=name, total_timesteps=total, num_envs=256, num_steps=40,
                                                  num_minibatches=8)


def training_speed(name: str, updates: int = 3) -> dict:
    """Environment steps/s of whole training updates (rollout, GAE, 4 epochs of minibatches) with
    the task's preset networks at the CPU-sized batch; compilation apart, best of two runs."""
    config = cpu_config(name, 256 * 40 * updates)
    t = time.perf_counter()
    train = jax.jit(make_train(config)).lower(jax.random.key(0)).compile()
    compile_s = time.perf_counter() - t
    best = float("inf")
    for i in range(2):
        t = time.perf_counter()
        jax.block_until_ready(train(jax.random.key(i)))
        best = min(best, time.perf_counter() - t)
    return {"env": name, "env_steps": config.num_updates * config.batch_size, "steps_per_s":
            config.num_updates * config.batch_size / best, "compile_s": compile_s}


def learning(name: str, total: int) -> dict:
    config = cpu_config(name, total)
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
            "random_return": random_return(name),
            "returns": [None if np.isnan(r) else round(float(r), 1) for r in returns],
            "config": config.to_dict()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="results/brax")
    p.add_argument("--only", choices=("speed", "training", "fidelity", "learning"), default=None)
    p.add_argument("--tasks", nargs="+", default=["inverted_pendulum", "hopper", "ant"])
    p.add_argument("--backends", nargs="+", default=list(BACKENDS))
    p.add_argument("--envs", type=int, default=64)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--learning-steps", type=int, default=2_000_000)
    p.add_argument("--learning-backend", default="mjx")
    p.add_argument("--learning-task", default="inverted_pendulum")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    record = {"device": str(jax.devices()[0]), "machine": platform.processor() or platform.machine(),
              "cpus": os.cpu_count(), "versions": package_versions("brax/"), "speed": [], "training": [], "learning": [], "fidelity": []}
    path = os.path.join(args.out, "brax_check.json")
    if os.path.exists(path):  # keep the part not run this time
        with open(path) as f:
            old = json.load(f)
        for part in ("speed", "training", "fidelity"):
            if args.only not in (None, part):
                record[part] = old.get(part, [])
        record["learning"] = old.get("learning", [])  # one row per task, replaced when rerun

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
    if args.only in (None, "training"):
        for task in args.tasks:
            for backend in args.backends:
                row = training_speed(f"brax/{task}-{backend}")
                print(f"{row['env']:34s} {row['steps_per_s']:>10,.0f} training steps/s  (compile {row['compile_s']:.0f} s)",
                      flush=True)
                record["training"].append(row)
                save()
    if args.only in (None, "fidelity"):
        for task in args.tasks:
            for row in fidelity(task, args.backends):
                rel = row["relative_error"]
                print(f"{task:18s} {row['backend']:12s} distance from mjx at 1/10/30/100 steps: "
                      + " / ".join(f"{row['error'][t]:.4f}" for t in rel) + "  relative: "
                      + " / ".join(f"{rel[t]:.2f}" for t in rel)
                      + f"  blew up: {row['nonfinite_envs']} of {row['num_envs']} envs", flush=True)
                record["fidelity"].append(row)
                save()
    if args.only in (None, "learning"):
        row = learning(f"brax/{args.learning_task}-{args.learning_backend}", args.learning_steps)
        print(f"{row['env']}: {row['env_steps']:,} steps in {row['train_s']:.0f} s (+{row['compile_s']:.0f} s compile), "
              f"final return {row['final_return']:.1f}, best {row['best_return']:.1f}, "
              f"random actions {row['random_return']:.1f}", flush=True)
        record["learning"] = [r for r in record["learning"] if r["env"] != row["env"]] + [row]
        save()


if __name__ == "__main__":
    main()
