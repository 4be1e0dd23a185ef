"""Partially observed tasks: a feed-forward (mlp) policy against a recurrent (gru) one, seeds vmapped.

* ``CartPole-NoVelocity-v1``: CartPole-v1 observing only the cart position and the pole angle
  (``purejaxppo/envs/masked.py``); the velocities must be inferred from successive observations.
* ``MemoryChain-bsuite``: a context bit shown only at the first step decides the final reward.

    python experiments/recurrent_check.py              # 3 seeds each, about 5 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np

from purejaxppo import HParams, PPOConfig, make_trainer
from purejaxppo.run.evaluate import make_evaluate

TASKS = {
    "CartPole-NoVelocity-v1": PPOConfig(env="CartPole-NoVelocity-v1", num_envs=32, num_steps=128, num_minibatches=4,
                                        update_epochs=4, lr=2.5e-3, ent_coef=0.01, total_timesteps=1_000_000,
                                        gru_hidden=64),
    "MemoryChain-bsuite": PPOConfig(env="MemoryChain-bsuite", num_envs=32, num_steps=32, num_minibatches=4,
                                    update_epochs=4, lr=2.5e-3, ent_coef=0.01, total_timesteps=32 * 32 * 80,
                                    gru_hidden=32),
}


def check(config: PPOConfig, seeds: int) -> dict:
    trainer = make_trainer(config)
    keys = jax.random.split(jax.random.key(0), seeds)
    t0 = time.perf_counter()
    states, _ = jax.block_until_ready(jax.jit(jax.vmap(trainer.train, in_axes=(0, None)))(
        keys, HParams.from_config(config)))
    seconds = time.perf_counter() - t0
    evaluate = jax.jit(jax.vmap(make_evaluate(trainer, num_episodes=64, deterministic=True)))
    returns = np.asarray(evaluate(states, jax.random.split(jax.random.key(9), seeds))).mean(axis=1)
    return dict(env=config.env, policy=config.policy, env_steps=config.num_updates * config.batch_size,
                eval_per_seed=[round(float(x), 3) for x in returns], seconds=round(seconds, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    rows = []
    for config in TASKS.values():
        for policy in ("mlp", "gru"):
            r = check(config.replace(policy=policy), args.seeds)
            rows.append(r)
            print(json.dumps(r), flush=True)
    print(f"\n{'task':<24} {'policy':<6} {'env steps':>10} {'eval, deterministic (per seed)':<34} {'seconds':>8}")
    for r in rows:
        print(f"{r['env']:<24} {r['policy']:<6} {r['env_steps']:>10,} {str(r['eval_per_seed']):<34} {r['seconds']:>8}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
