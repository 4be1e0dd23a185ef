"""Speed of the epoch shuffle: jax.random.permutation, the packed-word sort and the Feistel bijection.

Each draws a random permutation of a PPO batch (``purejaxppo.core.shuffle``); each is timed as
16 draws inside one compiled ``lax.scan`` whose result uses every element (best of 20 calls),
at the batch sizes of CartPole's benchmark workloads (4, 64, 2048 and 16384 envs x 128 steps),
one in between, and one that is not a power of two.

    python experiments/benchmark_shuffle.py
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

from purejaxppo.core.shuffle import feistel_permutation, packed_rounds, permutation


def per_draw_ms(fn, n: int, repeats: int = 20) -> float:
    def body(carry, key):  # every element is used: nothing computed per element can be left out
        return carry + jnp.sum(fn(key, n) * jnp.arange(n, dtype=jnp.int32)), None

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
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 8192, 65536, 262144, 2**21, 100_000])
    args = parser.parse_args()
    print(f"backend: {jax.default_backend()}")
    print(f"{'rows':>8} {'jax.random.permutation ms':>26} {'packed ms (rounds)':>19} {'feistel ms':>11} "
          f"{'feistel vs packed':>18}")
    for n in args.sizes:
        reference = per_draw_ms(jax.random.permutation, n, repeats=3 if n > 2**20 else 20)
        packed = per_draw_ms(permutation, n, repeats=3 if n > 2**20 else 20)
        feistel = per_draw_ms(feistel_permutation, n)
        packed_text = f"{packed:.3f} ({packed_rounds(n) or '-'})"
        print(f"{n:>8} {reference:>26.3f} {packed_text:>19} {feistel:>11.3f} {packed / feistel:>17.1f}x")

if __name__ == "__main__":
    main()
