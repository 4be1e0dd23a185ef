"""Speed benchmark: compile time, env steps per second and peak memory, side by side.

Workloads (PPO, 128 steps per env per update, 4 epochs, 4 minibatches, 64x64 tanh MLPs):

* purejaxppo on CartPole-v1 with 4, 64 and 2048 parallel environments;
* purejaxppo on Breakout-MinAtar with its preset (128 envs, 256x256 relu MLPs, 8 minibatches);
* Stable-Baselines3 PPO (PyTorch, CPU) on Gymnasium's CartPole-v1 with the same hyperparameters
  at 4 and 64 environments (``--sb3``; needs ``pip install -e ".[bench]"`` and a CPU build of torch);
* optionally any other trainer that prints one JSON line with ``sps`` and ``compile_seconds``
  (``--peer NAME=COMMAND``), for instance a reference implementation checked out elsewhere.

Every workload runs in its own fresh process, one after another (never side by side, so
they do not compete for cores), and reports the best of two timed runs after compilation.
With ``--repeat K`` the whole list runs K times, interleaved, and each workload keeps its
best round: timings on a shared 2-core machine vary by 10-20% from run to run, and
interleaving exposes every workload to the same conditions. Peak memory is the process's
peak resident set size.

    python experiments/benchmark_speed.py --sb3            # full table (about 5 minutes)
    python experiments/benchmark_speed.py --sb3 --repeat 3 --peer "REF=python /path/to/ref.py"
    python experiments/benchmark_speed.py --quick          # a smoke run of the script
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import time

CARTPOLE = dict(env="CartPole-v1", num_steps=128, update_epochs=4, num_minibatches=4, lr=2.5e-4)


def case_purejaxppo(env: str, num_envs: int, updates: int, preset: bool = False) -> dict:
    import jax

    from purejaxppo import HParams, PPOConfig, make_train
    from purejaxppo import preset as get_preset

    base = get_preset(env) if preset else PPOConfig(**CARTPOLE)
    config = base.replace(num_envs=num_envs, total_timesteps=num_envs * base.num_steps * updates)
    key, hp = jax.random.key(0), HParams.from_config(config)
    rss_before = _peak_rss_mb()
    t0 = time.perf_counter()
    compiled = jax.jit(make_train(config)).lower(key, hp).compile()
    compile_seconds = time.perf_counter() - t0
    best = float("inf")
    for i in range(2):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(jax.random.key(i), hp))
        best = min(best, time.perf_counter() - t0)
    steps = config.num_updates * config.batch_size
    return dict(
        compile_seconds=compile_seconds,
        sps=steps / best,
        env_steps=steps,
        peak_rss_mb=_peak_rss_mb(),
        rss_after_import_mb=rss_before,
    )


def case_sb3(num_envs: int, total: int) -> dict:
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(os.cpu_count() or 1)
    n_steps = 128
    vec = make_vec_env("CartPole-v1", n_envs=num_envs, seed=0)
    model = PPO(
        "MlpPolicy",
        vec,
        n_steps=n_steps,
        batch_size=num_envs * n_steps // 4,
        n_epochs=4,
        learning_rate=lambda f: 2.5e-4 * f,
        gamma=0.99,
        gae_lambda=0.95,
        clip_range=0.2,
        ent_coef=0.01,
        vf_coef=0.5,
        max_grad_norm=0.5,
        policy_kwargs=dict(net_arch=dict(pi=[64, 64], vf=[64, 64]), activation_fn=torch.nn.Tanh),
        device="cpu",
        seed=0,
        verbose=0,
    )
    t0 = time.perf_counter()
    model.learn(total_timesteps=total)
    seconds = time.perf_counter() - t0
    steps = (total + num_envs * n_steps - 1) // (num_envs * n_steps) * num_envs * n_steps
    return dict(compile_seconds=0.0, sps=steps / seconds, env_steps=steps, peak_rss_mb=_peak_rss_mb())


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_case(args: list[str]) -> dict:
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--case", *args], capture_output=True, text=True, timeout=1800
    )
    if proc.returncode != 0:
        return dict(error=(proc.stderr.strip().splitlines() or ["failed"])[-1])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_peer(command: str) -> dict:
    proc = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        return dict(error=(proc.stderr.strip().splitlines() or ["failed"])[-1])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="tiny budgets, to check the script runs")
    parser.add_argument("--sb3", action="store_true", help="also run Stable-Baselines3 PPO")
    parser.add_argument("--peer", action="append", default=[], metavar="NAME=COMMAND",
                        help="another trainer to run on CartPole-v1 at 64 envs; must print a JSON line with sps")
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    parser.add_argument("--repeat", type=int, default=1, metavar="K",
                        help="run the whole list K times, interleaved, and keep each workload's best round")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")

    if args.case:
        kind, *rest = args.case
        if kind == "purejaxppo":
            env, num_envs, updates, preset = rest[0], int(rest[1]), int(rest[2]), rest[3] == "preset"
            print(json.dumps(case_purejaxppo(env, num_envs, updates, preset)))
        else:
            print(json.dumps(case_sb3(int(rest[0]), int(rest[1]))))
        return

    q = args.quick
    cases = [
        ("purejaxppo CartPole-v1", 4, ["purejaxppo", "CartPole-v1", "4", "3" if q else "200", "plain"]),
        ("purejaxppo CartPole-v1", 64, ["purejaxppo", "CartPole-v1", "64", "3" if q else "60", "plain"]),
        ("purejaxppo CartPole-v1", 2048, ["purejaxppo", "CartPole-v1", "2048", "1" if q else "10", "plain"]),
        ("purejaxppo Breakout-MinAtar", 128, ["purejaxppo", "Breakout-MinAtar", "128", "1" if q else "10", "preset"]),
    ]
    if args.sb3:
        cases += [
            ("SB3 PPO CartPole-v1", 4, ["sb3", "4", "2048" if q else "40960"]),
            ("SB3 PPO CartPole-v1", 64, ["sb3", "64", "8192" if q else "81920"]),
        ]
    jobs = [(name, envs, lambda case=case: run_case(case)) for name, envs, case in cases]
    for spec in args.peer:
        name, _, command = spec.partition("=")
        jobs.append((name, 64, lambda command=command: run_peer(command)))
    best: list[dict | None] = [None] * len(jobs)
    for round_ in range(args.repeat):
        for i, (name, envs, job) in enumerate(jobs):
            print(f"[round {round_ + 1}/{args.repeat}] running {name} with {envs} envs ...", file=sys.stderr, flush=True)
            r = dict(name=name, num_envs=envs, **job())
            if best[i] is None or ("sps" in r and r["sps"] > best[i].get("sps", -1.0)):
                best[i] = r
    results = [r for r in best if r is not None]

    ours = {r["num_envs"]: r for r in results if r["name"] == "purejaxppo CartPole-v1" and "sps" in r}
    print(f"{'workload':<30} {'envs':>5} {'compile s':>10} {'steps/s':>12} {'peak MB':>9} {'purejaxppo / this':>18}")
    for r in results:
        if "error" in r:
            print(f"{r['name']:<30} {r['num_envs']:>5}  failed: {r['error']}")
            continue
        ratio = ""
        if not r["name"].startswith("purejaxppo") and r["num_envs"] in ours:
            ratio = f"{ours[r['num_envs']]['sps'] / r['sps']:.1f}x"
        peak = r.get("peak_rss_mb")
        print(
            f"{r['name']:<30} {r['num_envs']:>5} {r.get('compile_seconds', 0):>10.1f} {r['sps']:>12,.0f} "
            f"{(f'{peak:.0f}' if peak else '-'):>9} {ratio:>18}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
