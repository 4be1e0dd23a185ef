"""What XLA's compile-time settings change: the compile seconds, the run seconds and the bits of a training run.

    python experiments/compile_knobs.py --json results/speed/cpu_xeon_compile_knobs.json
    python experiments/compile_knobs.py --workload cartpole --knob default O2 --rounds 1

Each (workload, knob) pair runs in a fresh process with the knob's environment (``XLA_FLAGS`` or
JAX's PRNG implementation) and without the persistent compilation cache. The process compiles the
training program of ``make_train`` (``jax.jit(...).lower(key).compile()``: the seconds are XLA's),
calls it twice and keeps the faster call, and hashes every metric the run returns: the same digest
as the default means the same bits. Rounds visit the knobs in turn (the order reversed every other
round), and a pair's figures are the best over rounds. Ratios are the default's seconds over the
knob's, so above 1 is faster.

The question this answers: the test suite and a user's first launch are mostly XLA compiling
(``experiments/time_tests.py``). Can a setting compile faster without a slower or different run?
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time

WORKLOADS = {
    # name: (environment, PPOConfig changes)
    "cartpole": ("CartPole-v1", {}),  # the default command's program (500k steps)
    "breakout-minatar-128": ("Breakout-MinAtar", dict(num_envs=128, num_steps=128, num_minibatches=4,
                                                      update_epochs=4, total_timesteps=128 * 128 * 8)),
    "brax-hopper-mjx-64": ("brax/hopper", dict(num_envs=64, num_steps=20, num_minibatches=4,
                                               total_timesteps=64 * 20 * 20)),
}
KNOBS = {
    # name: environment variables of the child (XLA's default backend optimisation level is 3)
    "default": {},
    "O2": {"XLA_FLAGS": "--xla_backend_optimization_level=2"},
    "O1": {"XLA_FLAGS": "--xla_backend_optimization_level=1"},
    "O0": {"XLA_FLAGS": "--xla_backend_optimization_level=0"},
    "llvm-cheap-passes": {"XLA_FLAGS": "--xla_llvm_disable_expensive_passes=true"},
    "rbg-prng": {"JAX_DEFAULT_PRNG_IMPL": "rbg"},
    # XLA's CPU backend emits its fusions with the MLIR fusion emitters by default; off: the older elemental emitter
    "no-fusion-emitters": {"XLA_FLAGS": "--xla_cpu_use_fusion_emitters=false"},
    "no-fusion-emitters-O1": {"XLA_FLAGS": "--xla_cpu_use_fusion_emitters=false --xla_backend_optimization_level=1"},
}


def child(workload: str) -> dict:
    import jax
    import numpy as np

    from purejaxppo import PPOConfig, make_train
    from purejaxppo.core.presets import preset, preset_name_for

    env, changes = WORKLOADS[workload]
    name = preset_name_for(env)
    config = (preset(name) if name else PPOConfig(env=env)).replace(**changes)
    train = jax.jit(make_train(config))
    start = time.perf_counter()
    compiled = train.lower(jax.random.key(0)).compile()
    compile_s = time.perf_counter() - start
    runs = []
    for _ in range(2):
        start = time.perf_counter()
        _, metrics = jax.block_until_ready(compiled(jax.random.key(0)))
        runs.append(time.perf_counter() - start)
    digest = hashlib.sha256(b"".join(np.asarray(metrics[k]).tobytes() for k in sorted(metrics))).hexdigest()[:16]
    returns = np.asarray(metrics["charts/episodic_return"])
    finite = returns[np.isfinite(returns)]
    return {"compile_s": compile_s, "run_s": min(runs), "digest": digest,
            "last_return": float(finite[-1]) if finite.size else None}


def run_child(workload: str, knob: str) -> dict:
    unset = ("XLA_FLAGS", "JAX_DEFAULT_PRNG_IMPL", "JAX_COMPILATION_CACHE_DIR")
    env = dict({k: v for k, v in os.environ.items() if k not in unset}, **KNOBS[knob], JAX_PLATFORMS="cpu",
               PUREJAXPPO_COMPILATION_CACHE="off")
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", workload], env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:  # recorded as failed, with the error's line
        lines = done.stderr.strip().splitlines() or ["(no message)"]
        errors = [line for line in lines if "Error" in line.split(":")[0]]
        return {"failed": (errors or lines)[-1][:300]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workload", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    p.add_argument("--knob", nargs="+", default=list(KNOBS), choices=list(KNOBS))
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child)))
        return {}
    if args.rounds < 1:
        p.error(f"--rounds: got {args.rounds}; accepted: an integer >= 1")
    knobs = ["default"] + [k for k in args.knob if k != "default"]
    best: dict = {}
    for workload in args.workload:
        for r in range(args.rounds):
            for knob in (knobs if r % 2 == 0 else knobs[::-1]):
                if "failed" in best.get((workload, knob), {}):
                    continue  # failed in an earlier round
                got = run_child(workload, knob)
                if "failed" in got:
                    best[(workload, knob)] = dict(got)
                    print(f"{workload:22s} {knob:18s} round {r + 1}: failed: {got['failed']}", flush=True)
                    continue
                row = best.setdefault((workload, knob), dict(got, digests=[]))
                row["compile_s"] = min(row["compile_s"], got["compile_s"])
                row["run_s"] = min(row["run_s"], got["run_s"])
                row["digests"].append(got["digest"])
                print(f"{workload:22s} {knob:18s} round {r + 1}: compile {got['compile_s']:6.2f} s, "
                      f"run {got['run_s']:6.3f} s, digest {got['digest']}", flush=True)
    rows = []
    print(f"\n{'workload':22s} {'knob':18s} {'compile s':>9s} {'faster':>7s} {'run s':>8s} {'faster':>7s}  same bits")
    for (workload, knob), row in best.items():
        base = best[(workload, "default")]
        if "failed" in row or "failed" in base:
            row.update(workload=workload, knob=knob, env=KNOBS[knob])
            rows.append(row)
            print(f"{workload:22s} {knob:18s} failed: {row.get('failed', 'the default failed')}")
            continue
        row.update(workload=workload, knob=knob, env=KNOBS[knob],
                   compile_speedup=base["compile_s"] / row["compile_s"], run_speedup=base["run_s"] / row["run_s"],
                   same_bits=set(row["digests"]) == set(base["digests"]), deterministic=len(set(row["digests"])) == 1)
        rows.append(row)
        print(f"{workload:22s} {knob:18s} {row['compile_s']:9.2f} {row['compile_speedup']:6.2f}x {row['run_s']:8.3f} "
              f"{row['run_speedup']:6.2f}x  {'yes' if row['same_bits'] else 'no'}")
    record = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "date": time.strftime("%Y-%m-%d"), "command": "python experiments/compile_knobs.py "
              + " ".join(argv if argv is not None else sys.argv[1:]), "rounds": args.rounds, "rows": rows}
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)
    return record


if __name__ == "__main__":
    main()
