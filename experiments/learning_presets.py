"""Learning check of the presets: several seeds of each, trained in one vmapped program.

For each preset it reports the final training return of each seed (mean return of the
episodes that ended in the last 10% of env steps) and a deterministic evaluation of
each final policy (32 episodes, mode of the policy), next to the published return of
gymnax's PPO baselines (gymnax README, "PPO, ES (R: ...)" column; evaluated on
deterministic test rollouts by gymnax-blines).

    python experiments/learning_presets.py                      # CartPole, Acrobot, Pendulum, 5 seeds
    python experiments/learning_presets.py --envs CartPole-v1 --seeds 5
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np

from purejaxppo import HParams, make_trainer, preset
from purejaxppo.core.metrics import final_return
from purejaxppo.run.evaluate import make_evaluate

PUBLISHED = {  # gymnax README, PPO baselines of gymnax-blines
    "CartPole-v1": 500.0,
    "Acrobot-v1": -80.0,
    "Pendulum-v1": -130.0,
    "Breakout-MinAtar": 28.0,
}


def check(env: str, seeds: int) -> dict:
    config = preset(env)
    trainer = make_trainer(config)
    hp = HParams.from_config(config)
    keys = jax.random.split(jax.random.key(config.seed), seeds)
    t0 = time.perf_counter()
    states, metrics = jax.jit(jax.vmap(trainer.train, in_axes=(0, None)))(keys, hp)
    jax.block_until_ready(metrics)
    seconds = time.perf_counter() - t0
    evaluate = jax.jit(jax.vmap(make_evaluate(trainer, num_episodes=32, deterministic=True)))
    eval_returns = np.asarray(evaluate(states, jax.random.split(jax.random.key(12345), seeds))).mean(axis=1)
    finals = np.asarray(final_return(metrics))
    return dict(
        env=env,
        env_steps=config.num_updates * config.batch_size,
        seeds=seeds,
        final_return=finals.round(1).tolist(),
        eval_return=eval_returns.round(1).tolist(),
        published=PUBLISHED.get(env),
        seconds_incl_compile=round(seconds, 1),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=["CartPole-v1", "Acrobot-v1", "Pendulum-v1"])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    rows = []
    for env in args.envs:
        r = check(env, args.seeds)
        rows.append(r)
        print(json.dumps(r), flush=True)
    print()
    print(f"{'preset':<18} {'env steps':>10} {'final return (train, per seed)':<44} {'eval (det.)':>12} {'published':>10}")
    for r in rows:
        per_seed = " ".join(f"{x:.0f}" for x in r["final_return"])
        print(
            f"{r['env']:<18} {r['env_steps']:>10,} {per_seed:<44} {np.mean(r['eval_return']):>12.1f} "
            f"{r['published'] if r['published'] is not None else '-':>10}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
