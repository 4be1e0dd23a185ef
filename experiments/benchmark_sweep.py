"""Sweep benchmark: N agents in one vmapped program against the same N agents one after another.

Each agent: PPO on CartPole-v1, 4 envs x 128 steps, 4 epochs, 4 minibatches, 20 updates
(10,240 env steps), 64x64 tanh MLPs; agents differ in seed and learning rate. "Sequential"
compiles ``train`` once and calls it for each agent in turn (compile excluded from its
time); "vmapped" runs all agents in one compiled ``jit(vmap(train))`` program, as a sweep does on
one device (compile reported separately, second call timed). Each case
runs in a fresh process so peak memory is its own.

    python experiments/benchmark_sweep.py                   # 1, 16, 64, 256 agents
    python experiments/benchmark_sweep.py --agents 1 4      # a quick run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

AGENT = dict(env="CartPole-v1", num_envs=4, num_steps=128, num_minibatches=4, update_epochs=4, total_timesteps=4 * 128 * 20)


def case(mode: str, n: int) -> dict:
    import jax
    import jax.numpy as jnp

    from purejaxppo import HParams, PPOConfig, make_train

    config = PPOConfig(**AGENT)
    keys = jax.random.split(jax.random.key(0), n)
    lrs = jnp.geomspace(1e-4, 3e-3, n) if n > 1 else jnp.array([2.5e-4])
    base = HParams.from_config(config)
    hps = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (n,)), base).replace(lr=lrs.astype(jnp.float32))
    if mode == "vmapped":
        # what run_agents does on one device: one jit of vmap(train) over the agent axis
        t0 = time.perf_counter()
        compiled = jax.jit(jax.vmap(make_train(config))).lower(keys, hps).compile()
        compile_s = time.perf_counter() - t0
        jax.block_until_ready(compiled(keys, hps))  # first call: allocation warm-up
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(keys, hps))
        seconds = time.perf_counter() - t0
    else:
        train = jax.jit(make_train(config))
        t0 = time.perf_counter()
        jax.block_until_ready(train(keys[0], jax.tree_util.tree_map(lambda x: x[0], hps)))
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(n):
            jax.block_until_ready(train(keys[i], jax.tree_util.tree_map(lambda x: x[i], hps)))
        seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return dict(mode=mode, agents=n, seconds=seconds, agents_per_s=n / seconds, compile_s=compile_s, peak_rss_mb=peak)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--case", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    if args.case:
        print(json.dumps(case(args.case[0], int(args.case[1]))))
        return
    rows = []
    for n in args.agents:
        for mode in ("sequential", "vmapped"):
            print(f"running {n} agents {mode} ...", file=sys.stderr, flush=True)
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--case", mode, str(n)],
                                  capture_output=True, text=True, timeout=3600)
            if proc.returncode != 0:
                print(proc.stderr[-2000:], file=sys.stderr)
                continue
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"{'agents':>6} {'mode':>10} {'seconds':>8} {'agents/s':>9} {'compile s':>9} {'peak MB':>8} {'vmapped speed-up':>17}")
    seq = {r["agents"]: r for r in rows if r["mode"] == "sequential"}
    for r in rows:
        up = f"{seq[r['agents']]['seconds'] / r['seconds']:.1f}x" if r["mode"] == "vmapped" and r["agents"] in seq else ""
        print(f"{r['agents']:>6} {r['mode']:>10} {r['seconds']:>8.2f} {r['agents_per_s']:>9.2f} {r['compile_s']:>9.1f} "
              f"{r['peak_rss_mb']:>8.0f} {up:>17}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
