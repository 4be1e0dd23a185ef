"""Whether a change altered the compiled training programs: the optimised XLA of the speed benchmark's
CPU workloads, built by this checkout and by another (``--baseline PATH``, e.g. a ``git worktree`` of an
earlier commit), compared instruction by instruction (source locations left out).

Equal instructions mean equal speed and equal numbers, whatever was moved around in the Python;
a difference is listed for ``experiments/benchmark_speed.py --baseline`` to time.

    git worktree add /tmp/before COMMIT
    python experiments/compare_programs.py --baseline /tmp/before
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys

WORKLOADS = (("CartPole-v1", 4), ("CartPole-v1", 64), ("CartPole-v1", 2048), ("Breakout-MinAtar", 128),
             ("Pendulum-v1", 8))
HPARAMS = dict(num_steps=128, update_epochs=4, num_minibatches=4, lr=2.5e-4)


def instructions(env: str, num_envs: int) -> list[str]:
    """The optimised program's instruction lines, without source locations."""
    import jax

    from purejaxppo import HParams, PPOConfig
    from purejaxppo.core.train import make_trainer

    config = PPOConfig(env=env, num_envs=num_envs, total_timesteps=num_envs * 128 * 3, **HPARAMS)
    trainer = make_trainer(config)
    text = jax.jit(trainer.train).lower(jax.random.key(0), HParams.from_config(config)).compile().as_text()
    lines = [line for line in text.splitlines() if " = " in line]
    return [re.sub(r",? ?(metadata=\{[^}]*\}|stack_frame_id=\d+)", "", line) for line in lines]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", metavar="PATH", help="another checkout of purejaxppo to compare with")
    parser.add_argument("--digests", action="store_true", help=argparse.SUPPRESS)  # the child's mode
    args = parser.parse_args()
    if args.digests:
        out = {}
        for env, n in WORKLOADS:
            lines = instructions(env, n)
            out[f"{env}, {n} envs"] = [len(lines), hashlib.sha256("\n".join(lines).encode()).hexdigest()]
        print(json.dumps(out))
        return
    if not args.baseline or not os.path.isfile(os.path.join(args.baseline, "purejaxppo", "core", "train.py")):
        parser.error("--baseline: give a checkout of purejaxppo (a folder holding purejaxppo/core/train.py)")
    env = dict(os.environ, JAX_PLATFORMS="cpu")

    def digests(path: str | None) -> dict:
        child_env = env if path is None else dict(env, PYTHONPATH=os.path.abspath(path))
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--digests"], capture_output=True,
                              text=True, env=child_env, check=True, cwd=os.path.dirname(os.path.abspath(__file__)))
        return json.loads(proc.stdout.strip().splitlines()[-1])

    here, there = digests(None), digests(args.baseline)
    same = 0
    for name, (n, digest) in here.items():
        equal = there[name][1] == digest
        same += equal
        print(f"{name:<28} {n:>6} instructions here, {there[name][0]:>6} there: {'same' if equal else 'DIFFERENT'}")
    print(f"{same} of {len(here)} programs identical")


if __name__ == "__main__":
    main()
