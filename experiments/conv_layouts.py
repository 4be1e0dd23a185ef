"""The convolution torso under each ``conv`` layout (``core/tuning.py``), side by side in one process.

    python experiments/conv_layouts.py --env Breakout-MinAtar --num-envs 16 --json results/speed/cpu_xeon_conv_layouts.json

For each layout (``lax``: JAX's own convolution; ``shifted``: the shifted copies joined and one
product, ``networks.shifted_conv``) the same run (the environment's preset with ``--torso cnn``, the
rest of the CPU layout unchanged) is compiled once, then ``--updates`` updates are timed as one call,
``--rounds`` times interleaved; the best round of each counts. Both start from the same seed; the
mean training return is printed beside the speed (the two programs differ by float rounding, which
training carries forward).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time

import jax
import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--env", default="Breakout-MinAtar")
    p.add_argument("--num-envs", type=int, default=16)
    p.add_argument("--updates", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json")
    args = p.parse_args()

    from purejaxppo import preset
    from purejaxppo.core.config import HParams
    from purejaxppo.core.train import make_trainer
    from purejaxppo.core.tuning import tuning_for

    config = preset(args.env).replace(torso="cnn", num_envs=args.num_envs)
    config = config.replace(total_timesteps=args.updates * config.batch_size)
    hp = HParams.from_config(config)
    runs = {}
    for conv in ("lax", "shifted"):
        trainer = make_trainer(config, tuning=dataclasses.replace(tuning_for(jax.default_backend()), conv=conv))
        t0 = time.perf_counter()
        train = jax.jit(trainer.train).lower(jax.random.key(0), hp).compile()
        runs[conv] = {"compile_s": time.perf_counter() - t0, "train": train, "seconds": []}
    for _ in range(args.rounds):
        for conv, run in runs.items():
            t0 = time.perf_counter()
            _, metrics = jax.block_until_ready(run["train"](jax.random.key(0), hp))
            run["seconds"].append(time.perf_counter() - t0)
            run["return"] = float(np.nanmean(np.asarray(metrics["charts/episodic_return"])))
    steps = args.updates * config.batch_size
    rows = []
    for conv, run in runs.items():
        sps = steps / min(run["seconds"])
        rows.append({"conv": conv, "env_steps_per_s": sps, "compile_s": run["compile_s"], "seconds": run["seconds"],
                     "mean_return": run["return"]})
        print(f"conv={conv:<8} {sps:>10,.0f} env steps/s  compile {run['compile_s']:.1f} s  "
              f"mean training return {run['return']:.3f}", flush=True)
    ratio = rows[1]["env_steps_per_s"] / rows[0]["env_steps_per_s"]
    print(f"shifted / lax: {ratio:.1f}x ({args.env}, {args.num_envs} envs, channels {config.conv_channels}, "
          f"{config.num_minibatches} minibatches x {config.update_epochs} epochs)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": "python experiments/conv_layouts.py " + " ".join(sys.argv[1:]),
                       "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                       "device": str(jax.devices()[0]), "date": time.strftime("%Y-%m-%d", time.gmtime()),
                       "loadavg": os.getloadavg(), "ratio": ratio, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
