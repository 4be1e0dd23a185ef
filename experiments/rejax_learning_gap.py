"""Why Rejax's PPO scores more than ours on the Breakout-MinAtar seed sweep of ``peer_rejax.py``.

At that workload (8 seeds vmapped x 64 environments, 131,072 steps per seed, the same settings on both
sides, ``--clip-per-network``) the common judge scores Rejax 3.5 and purejaxppo 3.1
(``results/speed/cpu_xeon_peer_rejax_*.json``). Two differences remain between the two trainers' PPO at
those settings: Rejax's networks start from flax's default initialisation (LeCun normal kernels, every
layer) where ours start from orthogonal ones (gain sqrt(2) in the torso, 0.01 for the policy head, 1 for
the value head, as CleanRL and PureJaxRL do), and Rejax's Adam takes optax's default epsilon (1e-8)
where ours takes 1e-5. This script trains our PPO at the workload's settings with each combination of
the two (the initialisation swapped in for the run only; the epsilon is a setting) and scores every
final policy with ``peer_rejax.py``'s judge (128 sampled episodes, the same judge key), on the same
seeds as ``peer_rejax.py``'s run and on more::

    python experiments/rejax_learning_gap.py --seeds 8 16 --json results/speed/cpu_xeon_rejax_learning_gap.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_rejax import judge, legacy_make, our_config  # noqa: E402

WORKLOAD = "Breakout-MinAtar, 8 seeds vmapped x 64 envs"
VARIANTS = {  # name: (LeCun normal initialisation, Adam's epsilon)
    "ours: orthogonal, eps 1e-5": (False, 1e-5),
    "orthogonal, eps 1e-8": (False, 1e-8),
    "LeCun normal, eps 1e-5": (True, 1e-5),
    "LeCun normal, eps 1e-8 (Rejax's)": (True, 1e-8),
}


def train_and_judge(lecun: bool, adam_eps: float, seeds: int) -> list[float]:
    import purejaxppo.core.networks as networks
    from flax.linen import initializers

    from purejaxppo.core.train import make_trainer
    from purejaxppo.run.policy import PolicyParams, policy_act

    config = our_config(WORKLOAD, clip_per_network=True, adam_eps=adam_eps)
    # peer_rejax.py's seeds: its last timed call's keys (split(key(0), 3)[2], split per seed)
    keys = jax.random.split(jax.random.split(jax.random.key(0), 3)[2], seeds)
    orthogonal = networks.orthogonal
    if lecun:  # every layer, as flax's nn.Dense by default (the network reads the initialiser while tracing)
        networks.orthogonal = lambda scale=1.0: initializers.lecun_normal()
    try:
        trainer = make_trainer(config)
        state, _ = jax.block_until_ready(jax.jit(jax.vmap(trainer.train))(keys))
    finally:
        networks.orthogonal = orthogonal
    act = policy_act(trainer, deterministic=False)
    env, env_params = legacy_make(config.env)
    returns = []
    for i in range(seeds):
        s = jax.tree_util.tree_map(lambda x: x[i], state)
        policy = PolicyParams(s.params, s.obs_rms)
        returns.append(judge(lambda obs, k: act(policy, obs, k), env, env_params, jax.random.PRNGKey(99)))
    return returns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[8], help="seed counts (8: peer_rejax.py's seeds)")
    parser.add_argument("--json")
    args = parser.parse_args()
    record = {"date": time.strftime("%Y-%m-%d", time.gmtime()), "workload": WORKLOAD, "cpus": os.cpu_count(),
              "command": "python experiments/rejax_learning_gap.py --seeds " + " ".join(map(str, args.seeds)),
              "judge": "peer_rejax.judge: 128 sampled episodes, key PRNGKey(99)", "rows": []}
    for seeds in args.seeds:
        for name, (lecun, eps) in VARIANTS.items():
            returns = train_and_judge(lecun, eps, seeds)
            mean, se = float(np.mean(returns)), float(np.std(returns, ddof=1) / np.sqrt(seeds))
            record["rows"].append({"variant": name, "seeds": seeds, "mean": mean, "standard_error": se,
                                   "returns": [round(r, 2) for r in returns]})
            print(f"{seeds:3d} seeds  {name:34s} {mean:5.2f} +- {se:4.2f}", flush=True)
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(record, f, indent=1)


if __name__ == "__main__":
    main()
