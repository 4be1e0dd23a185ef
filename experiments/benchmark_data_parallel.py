"""Data-parallel training of one agent: 1 device against D devices, side by side.

Each row trains the same CartPole-v1 workload (128 steps per env per update, 4 epochs,
4 minibatches) with ``make_data_parallel_train`` on a mesh of D devices, in its own process
(the device count of a CPU is fixed when JAX starts: ``--xla_force_host_platform_device_count``).
On a CPU those devices are *fake*: they share the same cores, so this measures the cost of
the collectives rather than any gain; on a machine with several accelerators the devices are
real. Timings exclude compilation; best of ``--repeats`` runs.

    python experiments/benchmark_data_parallel.py                      # 1 and 2 CPU devices
    python experiments/benchmark_data_parallel.py --devices 1 2 4 --envs 64 2048
    python experiments/benchmark_data_parallel.py --platform gpu --devices 1 2 4 8
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

CHILD = """
import sys, time
import jax
from purejaxppo import PPOConfig
from purejaxppo.scale.parallel import make_data_parallel_train
envs, repeats, steps = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
config = PPOConfig(env="CartPole-v1", num_envs=envs, num_steps=128, update_epochs=4, num_minibatches=4,
                   total_timesteps=envs * 128 * max(4, steps // (envs * 128)))
train = jax.jit(make_data_parallel_train(config))
t0 = time.perf_counter()
compiled = train.lower(jax.random.key(0)).compile()
compile_s = time.perf_counter() - t0
best = float("inf")
for i in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(jax.random.key(i)))
    best = min(best, time.perf_counter() - t0)
print(f"RESULT {jax.device_count()} {jax.devices()[0].platform} {compile_s:.1f} {config.total_timesteps / best:.0f}")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--envs", type=int, nargs="+", default=[64, 2048])
    parser.add_argument("--steps", type=int, default=400_000, help="env steps per timed run")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--platform", choices=("cpu", "gpu"), default="cpu",
                        help="cpu: D fake CPU devices; gpu: the first D GPUs (CUDA_VISIBLE_DEVICES)")
    args = parser.parse_args()
    print(f"{'envs':>6} {'devices':>8} {'platform':>9} {'compile s':>10} {'env steps/s':>12} {'vs 1 device':>12}")
    for envs in args.envs:
        base = None
        for d in args.devices:
            env = dict(os.environ)
            if args.platform == "cpu":
                env["JAX_PLATFORMS"] = "cpu"
                env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={d}".strip()
            else:
                env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(d))
            out = subprocess.run([sys.executable, "-c", CHILD, str(envs), str(args.repeats), str(args.steps)],
                                 capture_output=True, text=True, env=env)
            line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT")), None)
            if line is None:
                print(f"{envs:>6} {d:>8}  failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
                continue
            _, n, platform, compile_s, sps = line.split()
            sps = float(sps)
            base = sps if d == 1 else base
            ratio = f"{sps / base:.2f}x" if base else "-"
            print(f"{envs:>6} {n:>8} {platform:>9} {compile_s:>10} {sps:>12,.0f} {ratio:>12}")


if __name__ == "__main__":
    main()
