"""Comparisons across methods from the stage records: gold at matched exact KL, over-optimisation,
Gao et al.'s functional forms, and the ensemble's spread against the gold peak.

* **Gold at matched KL.** Along a run's exact evaluations (KL, gold), the gold where the KL first
  reaches ``k``, linearly interpolated between the two measured points around it (None where the
  run never reaches ``k``). A method family's figure is the best of its runs.
* **Over-optimisation.** ``max_t gold_t - gold_final`` along a run, and the KL at the peak.
* **Gao, Schulman & Hilton (2022, arXiv:2210.10760, eqs. 1-2)**, with ``d = sqrt(KL)`` and gold
  measured from the reference's: best-of-n ``R(d) = d (alpha - beta d)``; RL
  ``R(d) = d (alpha - beta log d)``. Both are linear in ``(alpha, beta)``: least squares on the
  features ``[d, -d^2]`` and ``[d, -d log d]``; fit quality ``R^2 = 1 - SS_res / SS_tot`` and
  the largest residual.
"""

from __future__ import annotations

from typing import Any

import numpy as np

KL_GRID = (1.0, 3.0, 10.0)


def gold_at_kl(kl, gold, k: float) -> float | None:
    """The gold where the run's KL first reaches ``k``, interpolated on the two measured points
    around it; None if it never does. ``kl``, ``gold``: ``[evaluations]``."""
    kl, gold = np.asarray(kl, np.float64), np.asarray(gold, np.float64)
    for i in range(len(kl) - 1):
        if kl[i] <= k <= kl[i + 1] and kl[i + 1] > kl[i]:
            w = (k - kl[i]) / (kl[i + 1] - kl[i])
            return float(gold[i] + w * (gold[i + 1] - gold[i]))
    return float(gold[0]) if len(kl) and kl[0] == k else None


def best_at_kl(runs, k: float) -> float | None:
    """The best of :func:`gold_at_kl` over runs ``[(kl, gold), ...]``."""
    found = [g for g in (gold_at_kl(kl, gold, k) for kl, gold in runs) if g is not None]
    return max(found) if found else None


def overoptimisation(kl, gold) -> dict[str, float]:
    """``{"peak": max gold, "peak_kl", "final", "drop": peak - final}`` along a run."""
    gold = np.asarray(gold, np.float64)
    top = int(np.argmax(gold))
    return {"peak": float(gold[top]), "peak_kl": float(np.asarray(kl)[top]), "final": float(gold[-1]),
            "drop": float(gold[top] - gold[-1])}


def gao_fit(kl, gold, gold_ref: float, form: str) -> dict[str, Any]:
    """Least-squares ``(alpha, beta)`` of Gao et al.'s ``form`` ("bon": ``d (alpha - beta d)``, "rl":
    ``d (alpha - beta log d)``) to ``gold - gold_ref`` against ``d = sqrt(KL)``; with ``r2``,
    ``max_residual``, ``rmse`` and the points used (KL > 1e-9)."""
    kl, gold = np.asarray(kl, np.float64), np.asarray(gold, np.float64)
    keep = kl > 1e-9
    d, y = np.sqrt(kl[keep]), gold[keep] - gold_ref
    second = d**2 if form == "bon" else d * np.log(d)
    x = np.stack([d, -second], axis=1)
    (alpha, beta), *_ = np.linalg.lstsq(x, y, rcond=None)
    res = y - x @ np.array([alpha, beta])
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return {"form": form, "alpha": float(alpha), "beta": float(beta),
            "r2": 1.0 - float(np.sum(res**2)) / ss_tot if ss_tot > 0 else float("nan"),
            "max_residual": float(np.max(np.abs(res))), "rmse": float(np.sqrt(np.mean(res**2))), "points": int(keep.sum())}


def spread_warning(iterations, spread, eval_iterations, gold, rise: float = 1.5) -> dict[str, Any]:
    """Does the ensemble's spread rise before the gold peaks? The first iteration at which the sampled
    spread (smoothed over 5 iterations) exceeds ``rise`` times its value at the start, against the
    iteration of the exact gold's peak; ``lead`` = peak iteration - rise iteration (positive: the
    spread warned first; None where it never rose)."""
    s = np.convolve(np.asarray(spread, np.float64), np.ones(5) / 5, mode="valid")
    start = s[0]
    above = np.nonzero(s > rise * start)[0]
    risen = int(np.asarray(iterations)[above[0] + 2]) if above.size else None
    peak = int(np.asarray(eval_iterations)[int(np.argmax(gold))])
    return {"spread_start": float(start), "spread_end": float(s[-1]), "rise_iteration": risen,
            "gold_peak_iteration": peak, "lead": None if risen is None else peak - risen}


# ---- the study's runs, by method family ---------------------------------------------------------------
def _runs(rec: dict[str, Any]) -> list[tuple[list[float], list[float]]]:
    return list(zip(rec["exact"]["kl"], rec["exact"]["gold"]))


def _sorted_curve(kl, gold) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(kl, kind="stable")
    return np.asarray(kl)[order], np.asarray(gold)[order]


def families(records: dict[str, Any]) -> dict[str, list[tuple[Any, Any]]]:
    """Every method's runs as ``(exact KL, exact gold)`` curves, by family name (the study's
    records that are present)."""
    out: dict[str, list[tuple[Any, Any]]] = {}
    any_rec = next((r for k, r in records.items() if r and k != "sft"), None)
    if any_rec:
        out["exact optimum"] = [_sorted_curve(any_rec["frontier"]["kl"], any_rec["frontier"]["gold"])]
    for stage, name in (("ppo", "PPO"), ("grpo", "GRPO"), ("rloo", "RLOO")):
        if records.get(stage):
            out[name] = _runs(records[stage])
    if records.get("dpo"):
        out["DPO"] = [_sorted_curve(records["dpo"]["exact"]["kl"], records["dpo"]["exact"]["gold"])]
    if records.get("bon"):
        out["best-of-n"] = [(records["bon"]["exact"]["kl"], records["bon"]["exact"]["gold"])]
    ens = records.get("ensemble")
    if ens:
        for obj in ens["objectives"]:
            i = ens["objectives"].index(obj)
            out[f"PPO beta~0, ensemble {obj}"] = [_runs(ens["ppo"])[i]]
            out[f"GRPO beta~0, ensemble {obj}"] = [_runs(ens["grpo"])[i]]
            out[f"best-of-n, ensemble {obj}"] = [(ens["bon"][obj]["kl"], ens["bon"][obj]["gold"])]
    return out


def matched_kl_table(records: dict[str, Any], grid=KL_GRID) -> dict[str, list[float | None]]:
    """Per family, the best gold at each exact KL of ``grid`` (None: no run reaches it)."""
    return {name: [best_at_kl(runs, k) for k in grid] for name, runs in families(records).items()}


def single_runs(records: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Every run by its own name (``PPO adaptive``, ``GRPO beta~0``, ...), for over-optimisation."""
    out = {}
    for stage, name in (("ppo", "PPO"), ("grpo", "GRPO"), ("rloo", "RLOO")):
        if records.get(stage):
            for v, run in zip(records[stage]["variants"], _runs(records[stage])):
                out[f"{name} {v}"] = run
    for name, runs in families(records).items():
        if name in ("exact optimum", "DPO", "best-of-n") or "ensemble" in name:
            out[name] = runs[0]
    return out


def gao_fits(records: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Gao et al.'s forms fitted to the exact curves: best-of-n's form to every best-of-n curve, the
    RL form to the exact optimum's frontier and to every beta ~ 0 run."""
    ref = next((r["reference"]["gold"] for k, r in records.items() if r and k != "sft"), None)
    if ref is None:
        return {}
    fits = {}
    for name, (kl, gold) in single_runs(records).items():
        if name.startswith("best-of-n"):
            fits[name] = gao_fit(kl, gold, ref, "bon")
        elif name == "exact optimum" or "beta~0" in name:
            fits[name] = gao_fit(kl, gold, ref, "rl")
    return fits
