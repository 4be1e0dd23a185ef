"""The study on several task seeds: each seed's study in ``OUT/task-seed-S``, then per method the
gold at matched exact KL with intervals over the seeds, each check's pass rate, the
over-optimisation, and whether the planted trap exists on each seed.

* **Intervals** are percentile bootstrap intervals of the mean over task seeds
  (``scipy.stats.bootstrap``, 95%, 10,000 resamples); with a handful of seeds they are wide and
  rough, and the table gives the seeds' count.
* **The trap** exists on a seed when the exact optimal frontier's gold turns down at high KL: the
  drop from its peak to the largest KL of the frontier is at least ``TRAP_DROP`` (G's standard
  deviations).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from purejaxppo.rlhf import compare, report

TRAP_DROP = 0.1


def seed_folder(out: str, task_seed: int) -> str:
    return os.path.join(out, f"task-seed-{task_seed}")


def mean_interval(values) -> tuple[float, float, float] | None:
    """``(mean, low, high)``: a 95% percentile bootstrap interval of the mean; None without values."""
    from scipy.stats import bootstrap

    v = np.asarray([x for x in values if x is not None], np.float64)
    if v.size == 0:
        return None
    if v.size == 1 or np.all(v == v[0]):
        return float(v.mean()), float(v.min()), float(v.max())
    ci = bootstrap((v,), np.mean, confidence_level=0.95, n_resamples=10_000, method="percentile",
                   rng=np.random.default_rng(0)).confidence_interval
    return float(v.mean()), float(ci.low), float(ci.high)


def trap(records: dict[str, Any]) -> dict[str, float] | None:
    """The exact frontier's gold peak, its gold at the largest KL, and whether it turns down."""
    rec = next((r for k, r in records.items() if r and k != "sft"), None)
    if rec is None:
        return None
    kl, gold = np.asarray(rec["frontier"]["kl"]), np.asarray(rec["frontier"]["gold"])
    o = compare.overoptimisation(*compare._sorted_curve(kl, gold))
    return {**o, "exists": o["drop"] >= TRAP_DROP}


def aggregate(per_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Per family and KL, the gold over seeds; per check, its pass rate; per run, the drop; the trap."""
    tables = {s: compare.matched_kl_table(r) for s, r in per_seed.items()}
    names = list(dict.fromkeys(n for t in tables.values() for n in t))
    matched = {n: [mean_interval([tables[s].get(n, [None] * 3)[i] for s in per_seed]) for i in range(len(compare.KL_GRID))]
               for n in names}
    reached = {n: [sum(tables[s].get(n, [None] * 3)[i] is not None for s in per_seed) for i in range(len(compare.KL_GRID))]
               for n in names}
    passes: dict[str, list[bool]] = {}
    for r in per_seed.values():
        for what, _, holds in report.checks(r):
            passes.setdefault(what, []).append(holds)
    drops: dict[str, list[float]] = {}
    for r in per_seed.values():
        for name, (kl, gold) in compare.single_runs(r).items():
            drops.setdefault(name, []).append(compare.overoptimisation(kl, gold)["drop"])
    return {"seeds": list(per_seed), "kl_grid": list(compare.KL_GRID), "matched": matched, "reached": reached,
            "checks": {w: [int(sum(h)), len(h)] for w, h in passes.items()},
            "drops": {n: mean_interval(d) for n, d in drops.items()},
            "trap": {s: trap(r) for s, r in per_seed.items()}}


def _ci(x) -> str:
    return "-" if x is None else f"{x[0]:+.3f} [{x[1]:+.3f}, {x[2]:+.3f}]"


def markdown(agg: dict[str, Any], note: str = "") -> str:
    """``seeds.md``: the tables of :func:`aggregate`."""
    n = len(agg["seeds"])
    traps = agg["trap"]
    lines = [f"# RLHF study on {n} task seeds ({', '.join(map(str, agg['seeds']))})", ""]
    lines += [note, ""] if note else []
    lines += ["## Gold at matched exact KL", "", (f"Mean over task seeds [95% bootstrap interval of the mean]; (k/{n}): "
               "the seeds on which a run of the family reaches the KL."), "",
              "| method | " + " | ".join(f"gold at KL {k:g}" for k in agg["kl_grid"]) + " |",
              "|---" * (len(agg["kl_grid"]) + 1) + "|"]
    for name, cells in agg["matched"].items():
        lines.append(f"| {name} | " + " | ".join(f"{_ci(c)} ({k}/{n})" for c, k in zip(cells, agg["reached"][name])) + " |")
    lines += ["", "## Over-optimisation", "", "Gold drop from its peak along each run, mean over seeds [95% interval].", "",
              "| run | drop |", "|---|---|"]
    lines += [f"| {name} | {_ci(d)} |" for name, d in agg["drops"].items()]
    exists = sum(bool(t and t["exists"]) for t in traps.values())
    lines += ["", "## The planted trap", "", (f"The exact optimal frontier's gold turns down at high KL (drop >= {TRAP_DROP} "
               f"from its peak) on {exists} of {n} seeds."), "",
              "| task seed | frontier gold peak (KL) | gold at the largest KL (drop) |", "|---|---|---|"]
    for s, t in traps.items():
        if t:
            lines.append(f"| {s} | {t['peak']:+.3f} ({t['peak_kl']:.2f}) | {t['final']:+.3f} ({t['drop']:.3f}) |")
    lines += ["", "## Checks: pass rate over seeds", "", "| property | holds on |", "|---|---|"]
    lines += [f"| {w} | {k}/{m} |" for w, (k, m) in agg["checks"].items()]
    return "\n".join(lines) + "\n"


def write(out: str, task_seeds, note: str = "") -> dict[str, Any]:
    """Read each seed's records from ``out``, write ``seeds.json`` and ``seeds.md``; returns the aggregate."""
    from purejaxppo.rlhf.pipeline import STAGES, read_stage
    from purejaxppo.run.layout import write_json

    per_seed = {s: {st: read_stage(seed_folder(out, s), st) for st in STAGES} for s in task_seeds}
    agg = aggregate(per_seed)
    write_json(os.path.join(out, "seeds.json"), json.loads(json.dumps(agg, default=lambda o: bool(o))))
    with open(os.path.join(out, "seeds.md"), "w") as f:
        f.write(markdown(agg, note))
    return agg
