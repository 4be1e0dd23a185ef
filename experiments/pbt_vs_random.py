"""PBT against random search at equal compute: the same population size, env steps and initial draws.

For each task, ``--replicates`` independent procedures of ``--population`` agents each are trained in one
compiled program (``num_populations`` blocks), twice: with PBT's selection and exploration, and with
selection off, which is random search over the same initial draws and agent keys (a paired comparison:
replicate r of both methods starts from the same population). A procedure's score is the final return
(episodes of the last 10% of env steps) of its best agent; the population's mean is reported beside it.
Per task: IQM over replicates with a percentile bootstrap interval, and the paired difference
PBT - random search with its bootstrap interval; across tasks: IQM of min-max normalised scores with a
stratified bootstrap interval (:mod:`purejaxppo.scale.stats`).

    python experiments/pbt_vs_random.py --out results/pbt
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

from purejaxppo import make_trainer
from purejaxppo.core.config import HParams
from purejaxppo.core.metrics import final_return
from purejaxppo.core.presets import preset
from purejaxppo.run.population import plot_hparams
from purejaxppo.scale.pbt import PBTConfig, run_pbt
from purejaxppo.scale.plan import Distribution, make_settings
from purejaxppo.scale.stats import bootstrap_ci, iqm, stratified_bootstrap_ci

SPACE = {
    "lr": Distribution("log-uniform", (1e-4, 1e-2)),
    "ent_coef": Distribution("log-uniform", (1e-4, 1e-1)),
    "clip_eps": Distribution("uniform", (0.1, 0.4)),
}
# Reduced budgets (this machine: 2 shared CPU cores): far below the presets' 0.5M-10M steps per agent.
TASKS = {
    "CartPole-v1": {"total_timesteps": 49_152, "num_envs": 8, "num_steps": 128},
    "Acrobot-v1": {"total_timesteps": 65_536, "num_envs": 8, "num_steps": 128},
    "SpaceInvaders-MinAtar": {"total_timesteps": 131_072, "num_envs": 32, "num_steps": 128},
}


def initial_population(config, replicates: int, population: int, seed: int):
    """``(keys [R*P], hparams [R*P])``: each replicate its own draws of SPACE and its own agent keys."""
    settings = []
    for r in range(replicates):
        settings += make_settings(samples=SPACE, num_samples=population, key=jax.random.fold_in(jax.random.key(seed), r))
    rows = [HParams.from_config(config.replace(**s)) for s in settings]
    hparams = jax.tree_util.tree_map(lambda *xs: np.stack(xs), *rows)
    keys = jax.random.split(jax.random.key(seed + 1), replicates * population)
    return keys, hparams


def run_task(env: str, args, log) -> dict:
    config = preset(env).replace(**TASKS[env])
    if args.scale != 1.0:
        config = config.replace(total_timesteps=int(config.total_timesteps * args.scale))
    trainer = make_trainer(config)
    r, p = args.replicates, args.population
    keys, hparams = initial_population(config, r, p, args.seed)
    interval = max(1, config.num_updates // args.generations)
    out = {}
    for method, fraction in (("pbt", args.fraction), ("random", 0.0)):
        pbt = PBTConfig(interval=interval, fraction=fraction, num_populations=r)
        t0 = time.perf_counter()
        _, metrics, record = run_pbt(trainer, keys, hparams, pbt, SPACE, jax.random.key(args.seed + 2))
        finals = np.asarray(final_return(metrics)).reshape(r, p)
        out[method] = {"best": np.nanmax(finals, axis=1), "mean": np.nanmean(finals, axis=1), "finals": finals,
                           "seconds": time.perf_counter() - t0, "record": record,
                           "diverged": int(record.diverged.sum()) if record.diverged.size else 0}
        log(f"{env} {method}: best per replicate {np.round(out[method]['best'], 1)} "
            f"({out[method]['seconds']:.0f} s)")
    out["config"], out["interval"] = config, interval
    return out


def summarise(results: dict, args) -> tuple[list[dict], str]:
    rows, lines = [], []
    lines.append("| task | env steps / agent | PBT best: IQM [95% CI] | random search best: IQM [95% CI] | "
                 "PBT - RS (paired mean) [95% CI] | PBT pop. mean | RS pop. mean |")
    lines.append("|---|---|---|---|---|---|---|")
    normalised = {"pbt": [], "random": []}
    for env, res in results.items():
        pb, rs = res["pbt"]["best"], res["random"]["best"]
        lo_all, hi_all = min(pb.min(), rs.min()), max(pb.max(), rs.max())
        for m, scores in normalised.items():
            scores.append((res[m]["best"] - lo_all) / max(hi_all - lo_all, 1e-9))
        diff = pb - rs
        cell = lambda v, k: "{:.1f} [{:.1f}, {:.1f}]".format(iqm(v), *stratified_bootstrap_ci(v[None], key=k))
        dlo, dhi = bootstrap_ci(diff, key=3)
        steps = res["config"].num_updates * res["config"].batch_size
        lines.append(f"| {env} | {steps:,} | {cell(pb, 1)} | {cell(rs, 2)} | {diff.mean():+.1f} [{dlo:+.1f}, {dhi:+.1f}]"
                     f" | {res['pbt']['mean'].mean():.1f} | {res['random']['mean'].mean():.1f} |")
        for m in ("pbt", "random"):
            for i in range(len(res[m]["best"])):
                rows.append({"task": env, "method": m, "replicate": i, "best_final_return": float(res[m]["best"][i]),
                                 "mean_final_return": float(res[m]["mean"][i]), "seconds": round(res[m]["seconds"], 1)})
    agg = {m: np.stack(v) for m, v in normalised.items()}
    lines.append("")
    for m, name in (("pbt", "PBT"), ("random", "random search")):
        lo, hi = stratified_bootstrap_ci(agg[m], key=5)
        lines.append(f"- {name}: IQM of min-max normalised best scores over tasks x replicates {iqm(agg[m]):.3f} "
                     f"[{lo:.3f}, {hi:.3f}]")
    return rows, "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="results/pbt")
    ap.add_argument("--tasks", nargs="+", default=list(TASKS))
    ap.add_argument("--replicates", type=int, default=5)
    ap.add_argument("--population", type=int, default=8)
    ap.add_argument("--generations", type=int, default=10, help="the interval is num_updates // generations")
    ap.add_argument("--fraction", type=float, default=0.25)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every task's env steps (a quick check)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    log = lambda m: print(m, flush=True)
    results = {}
    for env in args.tasks:
        results[env] = run_task(env, args, log)
        rec = results[env]["pbt"]["record"]
        plot_hparams(os.path.join(args.out, f"hparams_{env}.png"), rec, env, args.population)
        np.savez_compressed(os.path.join(args.out, f"pbt_{env}.npz"), updates=rec.updates, parent=rec.parent,
                            fitness=rec.fitness, diverged=rec.diverged,
                            **{f"hparams__{k}": v for k, v in rec.hparams.items()},
                            finals_pbt=results[env]["pbt"]["finals"], finals_random=results[env]["random"]["finals"])
    rows, table = summarise(results, args)
    with open(os.path.join(args.out, "results.csv"), "w") as f:
        f.write(",".join(rows[0]) + "\n")
        f.writelines(",".join(str(v) for v in r.values()) + "\n" for r in rows)
    meta = {"command": "python " + " ".join(sys.argv), "space": {k: [d.kind, *d.values] for k, d in SPACE.items()},
                "tasks": {env: dict(TASKS[env], interval=results[env]["interval"],
                                 diverged_replaced=results[env]["pbt"]["diverged"]) for env in results},
                "replicates": args.replicates, "population": args.population, "fraction": args.fraction,
                "device": jax.devices()[0].device_kind}
    with open(os.path.join(args.out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(table + "\n")
    log(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
