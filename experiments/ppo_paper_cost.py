"""What the PPO paper's protocol costs here: env steps per second of one vmapped group of agents.

Trains one program of ``purejaxppo reproduce ppo-paper`` (the four unpenalised settings, or TRPO,
x ``--seeds``) for ``--updates`` updates of 2048 steps on each task and backend, times a second call
(compilation apart), and extrapolates the full protocol: 7 tasks x (11 settings + TRPO) x 3 seeds x
1M steps. Writes one JSON row per measurement to ``--out``.

    python experiments/ppo_paper_cost.py --task inverted_pendulum hopper --backend positional mjx
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np

from purejaxppo.core.config import HParams
from purejaxppo.core.train import make_trainer
from purejaxppo.run.ppo_paper import FULL_SEEDS, FULL_STEPS, SETTINGS, TASKS, paper_config, trpo_config


def measure(task: str, backend: str, seeds: int, updates: int, algo: str) -> dict:
    env = f"brax/{task}-{backend}"
    steps = 2048 * updates
    if algo == "trpo":
        configs = [trpo_config(env, steps)]
    else:
        configs = [paper_config(env, steps).replace(**s.changes) for s in SETTINGS if s.variant == "off"]
    trainer = make_trainer(configs[0])
    rows = [HParams.from_config(c) for c in configs for _ in range(seeds)]
    hparams = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *rows)
    keys = jax.random.split(jax.random.key(0), len(rows))
    train = jax.jit(jax.vmap(trainer.train))
    t0 = time.perf_counter()
    jax.block_until_ready(train(keys, hparams))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(train(keys, hparams))
    run = time.perf_counter() - t0
    agent_steps_per_s = len(rows) * steps / run
    return {"task": task, "backend": backend, "algo": algo, "agents": len(rows), "updates": updates,
            "compile_and_run_s": round(first, 1), "run_s": round(run, 2),
            "agent_env_steps_per_s": round(agent_steps_per_s, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", nargs="+", default=["inverted_pendulum"], choices=TASKS)
    p.add_argument("--backend", nargs="+", default=["positional"])
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--updates", type=int, default=2)
    p.add_argument("--algo", nargs="+", default=["ppo"], choices=["ppo", "trpo"])
    p.add_argument("--out", default=None)
    a = p.parse_args()
    rows = []
    for task in a.task:
        for backend in a.backend:
            for algo in a.algo:
                row = measure(task, backend, a.seeds, a.updates, algo)
                # the full protocol's agent-steps: 7 tasks x 12 runs (11 settings + TRPO) x 3 seeds x 1M
                full = len(TASKS) * (len(SETTINGS) + 1) * FULL_SEEDS * FULL_STEPS
                row["full_protocol_hours_at_this_rate"] = round(full / row["agent_env_steps_per_s"] / 3600, 1)
                print(json.dumps(row), flush=True)
                rows.append(row)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"rows": rows, "device": str(jax.devices()[0]), "jax": jax.__version__}, f, indent=2)


if __name__ == "__main__":
    main()
