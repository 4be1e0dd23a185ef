"""Chunked training against the fused program, and start-up with the compilation cache.

Part 1, chunks: the same run (CartPole-v1 preset) trained
  * fused: ``jax.jit(make_train(config))``, one call for the whole run;
  * chunked: ``purejaxppo.run.runner.run`` as the ``train`` command uses it, with its default chunks,
    metrics streamed to metrics.csv after every chunk and a checkpoint at the end; and the same
    with one checkpoint per chunk.
Timings exclude compilation; each variant runs ``--repeats`` times, alternating, best kept.

Part 2, start-up: ``purejaxppo train`` launched twice in fresh processes with an empty
compilation cache; reports seconds from launch to the start of training (the "compiled in"
line) and to the end, for the first run (compiles) and the second (loads from the cache).

    python experiments/benchmark_chunks.py            # about 3 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time


def chunk_benchmark(repeats: int, timesteps: int) -> list[tuple[str, float]]:
    import jax

    from purejaxppo import HParams, make_train, preset
    from purejaxppo.run.runner import run

    config = preset("CartPole-v1").replace(total_timesteps=timesteps)
    key, hp = jax.random.key(config.seed), HParams.from_config(config)
    fused = jax.jit(make_train(config)).lower(key, hp).compile()
    steps = config.num_updates * config.batch_size
    best = {"fused": float("inf"), "chunked": float("inf"), "chunked, checkpoint every chunk": float("inf")}
    chunk = None
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(fused(key, hp))
            best["fused"] = min(best["fused"], time.perf_counter() - t0)
            out = run(config, os.path.join(tmp, f"a{i}"), log=lambda m: None, progress=False)
            chunk = out["chunk_updates"]
            best["chunked"] = min(best["chunked"], out["train_seconds"])
            out = run(config, os.path.join(tmp, f"b{i}"), log=lambda m: None, progress=False, checkpoint_every=chunk,
                      keep_checkpoints=2)
            best["chunked, checkpoint every chunk"] = min(best["chunked, checkpoint every chunk"], out["train_seconds"])
    print(f"CartPole-v1 preset, {config.num_updates} updates of {config.batch_size} env steps; "
          f"chunks of {chunk} updates ({-(-config.num_updates // chunk)} chunks)")
    rows = [(name, steps / seconds) for name, seconds in best.items()]
    fused_sps = rows[0][1]
    print(f"{'variant':<34} {'env steps/s':>12} {'vs fused':>9}")
    for name, sps in rows:
        print(f"{name:<34} {sps:>12,.0f} {sps / fused_sps:>8.1%}")
    return rows


def startup_benchmark(timesteps: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, PUREJAXPPO_COMPILATION_CACHE=os.path.join(tmp, "cache"))
        print(f"\npurejaxppo train --total-timesteps {timesteps} (CartPole-v1 preset), empty compilation cache")
        print(f"{'launch':<8} {'to training start s':>20} {'to exit s':>10}")
        for i, label in enumerate(("first", "second")):
            cmd = [sys.executable, "-m", "purejaxppo.cli", "train", "--total-timesteps", str(timesteps),
                   "--out", os.path.join(tmp, f"run{i}")]
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
            started = None
            for line in proc.stdout:
                if line.startswith("compiled in") and started is None:
                    started = time.perf_counter() - t0
            proc.wait()
            total = time.perf_counter() - t0
            print(f"{label:<8} {started if started is not None else float('nan'):>20.1f} {total:>10.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timesteps", type=int, default=500_000)
    parser.add_argument("--quick", action="store_true", help="tiny budgets, to check the script runs")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.timesteps = 1, 16 * 128 * 4
    chunk_benchmark(args.repeats, args.timesteps)
    startup_benchmark(args.timesteps)


if __name__ == "__main__":
    main()
