"""Speed of the epoch shuffle: purejaxppo.core.shuffle.permutation against jax.random.permutation.

Both draw a uniformly random permutation of a PPO batch; each is timed as 16 draws inside
one compiled ``lax.scan`` (best of 20 calls), at the batch sizes of CartPole's benchmark
workloads (4, 64 and 2048 envs x 128 steps) and one in between.

    python experiments/benchmark_shuffle.py
"""

from __future__ import annotations

import argparse
import time

import jax

from purejaxppo.core.shuffle import packed_rounds, permutation


def per_draw_ms(fn, n: int, repeats: int = 20) -> float:
    def body(carry, key):
        return carry + fn(key, n)[0], None

    run = jax.jit(lambda key: jax.lax.scan(body, 0, jax.random.split(key, 16))[0])
    jax.block_until_ready(run(jax.random.key(0)))
    best = float("inf")
    for i in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(run(jax.random.key(i)))
        best = min(best, time.perf_counter() - t0)
    return best / 16 * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 8192, 65536, 262144])
    args = parser.parse_args()
    print(f"backend: {jax.default_backend()}")
    print(f"{'rows':>8} {'rounds':>6} {'jax.random.permutation ms':>26} {'shuffle.permutation ms':>23} {'speed-up':>9}")
    for n in args.sizes:
        reference = per_draw_ms(jax.random.permutation, n)
        ours = per_draw_ms(permutation, n)
        print(f"{n:>8} {packed_rounds(n) or '-':>6} {reference:>26.3f} {ours:>23.3f} {reference / ours:>8.1f}x")


if __name__ == "__main__":
    main()
