"""Result rows, the checks of the study, the summary and the plots, from the stage records."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np


def _ppo_final(rec: dict[str, Any], v: int) -> dict[str, float]:
    return {f: rec["exact"][f][v][-1] for f in ("kl", "proxy", "gold", "win_rate")}


def result_rows(records: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per policy: method, setting, exact KL, proxy, gold, win rate."""
    rows = []

    def row(method, setting, point):
        rows.append({"method": method, "setting": setting, "exact_kl": point["kl"], "proxy": point["proxy"],
                     "gold": point["gold"], "win_rate": point["win_rate"]})

    any_rec = next((r for k, r in records.items() if r and k != "sft"), None)
    if any_rec:
        row("reference", "sft", any_rec["reference"])
    if records.get("ppo"):
        rec = records["ppo"]
        for v, name in enumerate(rec["variants"]):
            h = {k: rec["hparams"][k][v] for k in ("kl_coef", "kl_target", "kl_horizon")}
            # A fixed beta has an infinite horizon, written as null.
            fixed = h["kl_horizon"] is None or not math.isfinite(h["kl_horizon"])
            setting = f"beta={h['kl_coef']:g}" if fixed else f"beta0={h['kl_coef']:g} target={h['kl_target']:g}"
            row(f"ppo-{name}", setting, _ppo_final(rec, v))
    if records.get("dpo"):
        rec = records["dpo"]
        for i, beta in enumerate(rec["betas"]):
            row("dpo", f"beta={beta:g}", {f: rec["exact"][f][i] for f in ("kl", "proxy", "gold", "win_rate")})
    if records.get("bon"):
        rec = records["bon"]
        for i, n in enumerate(rec["n"]):
            row("best-of-n", f"n={n}", {f: rec["exact"][f][i] for f in ("kl", "proxy", "gold", "win_rate")})
    return rows


def _interp_proxy(front: dict[str, list[float]], kl: float) -> float:
    k = np.asarray(front["kl"])
    order = np.argsort(k)
    return float(np.interp(kl, k[order], np.asarray(front["proxy"])[order]))


def checks(records: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """``(what, measured, holds)`` for each property the study is meant to show, stage by stage
    (each stage's checks when its record is there)."""
    out = []

    def check(what, measured, holds):
        out.append((what, measured, bool(holds)))

    for stage, stage_checks in _CHECKS:
        if records.get(stage):
            for run_checks in stage_checks:
                run_checks(records[stage], check)
    return out


def _sft_checks(s: dict[str, Any], check: Callable) -> None:
    """The reference model against G's entropy."""
    gap = s["heldout_nll_per_token"] - s["entropy_per_token"]
    check("SFT held-out NLL within 0.05 nats/token of G's entropy", f"{s['heldout_nll_per_token']:.4f} vs "
          f"{s['entropy_per_token']:.4f} (gap {gap:+.4f})", abs(gap) <= 0.05)


def _reward_checks(r: dict[str, Any], check: Callable) -> None:
    """The reward model's accuracy and normalisation."""
    check("reward model accuracy >= 0.80 on held-out gold comparisons (|delta r*| >= 0.1)",
          f"{r['heldout_accuracy']:.3f} on {r['heldout_comparisons']}", r["heldout_accuracy"] >= 0.80)
    check("normalised proxy on fresh reference samples: mean 0 +- 0.05, std 1 +- 0.05",
          f"mean {r['proxy_mean_on_reference']:+.3f}, std {r['proxy_std_on_reference']:.3f}",
          abs(r["proxy_mean_on_reference"]) <= 0.05 and abs(r["proxy_std_on_reference"] - 1) <= 0.05)


def _ppo_checks(p: dict[str, Any], check: Callable) -> None:
    """PPO with the adaptive KL controller: gains, KL on target, the controller, first steps."""
    ref = p["reference"]
    a = p["variants"].index("adaptive")
    fin = _ppo_final(p, a)
    hist = {k: np.asarray(v[a]) for k, v in p["history"].items()}
    target = p["hparams"]["kl_target"][a]
    n = len(hist["kl"])
    last = hist["kl"][int(0.8 * n):].mean()
    check("PPO (adaptive): exact proxy gain >= 0.75 RM sigma", f"{fin['proxy'] - ref['proxy']:+.3f}",
          fin["proxy"] - ref["proxy"] >= 0.75)
    check("PPO (adaptive): mean sampled KL over the last 20% within [0.5, 1.5] x target",
          f"{last:.3f} nats, target {target:g}", 0.5 * target <= last <= 1.5 * target)
    moved = hist["kl_coef"][-1] - hist["kl_coef"][0]
    err = np.mean(hist["kl"] - target)
    check("PPO (adaptive): beta moved in the sign of (KL - target)",
          f"beta {hist['kl_coef'][0]:.3f} -> {hist['kl_coef'][-1]:.3f}, mean KL - target {err:+.3f}",
          np.sign(moved) == np.sign(err))
    check("PPO (adaptive): gold >= reference + 0.3 sigma", f"{fin['gold']:+.3f} vs {ref['gold']:+.3f}",
          fin["gold"] >= ref["gold"] + 0.3)
    check("PPO (adaptive): gold win rate vs the reference >= 0.60", f"{fin['win_rate']:.3f}", fin["win_rate"] >= 0.6)
    first = max(np.max(np.asarray(v)) for v in p["history"]["first_ratio_dev"])
    check("PPO: ratio 1 on every iteration's first minibatch and sampled KL 0 at the start",
          f"max |ratio - 1| {first:.1e}, first KL {hist['kl'][0]:.1e}", first < 1e-4 and abs(hist["kl"][0]) < 1e-4)
    approx = max(np.max(np.asarray(v)) for v in p["history"]["approx_kl"])
    check("PPO: approx-KL per update < 0.1", f"max {approx:.4f}", approx < 0.1)


def _ppo_exact_checks(p: dict[str, Any], check: Callable) -> None:
    """PPO (adaptive) against the exact optimum, and its sampled KL against the exact one."""
    ref, a = p["reference"], p["variants"].index("adaptive")
    fin = _ppo_final(p, a)
    hist = {k: np.asarray(v[a]) for k, v in p["history"].items()}
    opt = _interp_proxy(p["frontier"], fin["kl"]) - ref["proxy"]
    check("PPO (adaptive): proxy gain >= 0.7 x the exact optimum's at the same exact KL",
          f"{fin['proxy'] - ref['proxy']:.3f} vs {opt:.3f} at KL {fin['kl']:.3f} ({(fin['proxy'] - ref['proxy']) / opt:.2f}x)",
          fin["proxy"] - ref["proxy"] >= 0.7 * opt)
    # The sampled estimate at iteration i*E is of the policy evaluated exactly at point i.
    every = p["eval_iterations"][1]
    ex = np.asarray(p["exact"]["kl"][a][1:-1])
    sampled = hist["kl"][every::every][: len(ex)]
    rel = np.abs(sampled - ex) / np.maximum(ex, 1e-8)
    check("PPO (adaptive): sampled KL within 25% of the exact KL (every evaluation after the first)",
          f"largest gap {rel.max():.0%}" if rel.size else "no evaluations", rel.size and rel.max() <= 0.25)


def _overoptimisation_checks(p: dict[str, Any], check: Callable) -> None:
    """PPO with beta ~ 0: the proxy over-optimised against gold."""
    h = p["variants"].index("beta~0")
    gold, proxy, kl = (np.asarray(p["exact"][f][h]) for f in ("gold", "proxy", "kl"))
    peak = int(np.argmax(gold))
    check("beta ~ 0: gold falls >= 0.2 sigma from its peak while the proxy ends at least as high",
          f"gold peak {gold[peak]:+.3f} (KL {kl[peak]:.2f}) -> {gold[-1]:+.3f} (KL {kl[-1]:.2f}); "
          f"proxy {proxy[peak]:+.3f} -> {proxy[-1]:+.3f}", gold[peak] - gold[-1] >= 0.2 and proxy[-1] >= proxy[peak])
    gap = proxy - gold
    check("beta ~ 0: the proxy-gold gap grows with KL (rank correlation > 0.5)",
          f"gap {gap[0]:+.3f} -> {gap[-1]:+.3f}, Spearman {_spearman(kl, gap):.2f}", _spearman(kl, gap) > 0.5)


def _dpo_checks(d: dict[str, Any], check: Callable) -> None:
    """DPO's gains and its KL against beta."""
    ref = d["reference"]
    if 0.1 in d["betas"]:
        i = d["betas"].index(0.1)
        check("DPO beta=0.1: gold >= reference + 0.2 sigma", f"{d['exact']['gold'][i]:+.3f} vs {ref['gold']:+.3f}",
              d["exact"]["gold"][i] >= ref["gold"] + 0.2)
        check("DPO beta=0.1: implicit-reward accuracy >= 0.70 on held-out gold comparisons",
              f"{d['implicit_reward_accuracy'][i]:.3f}", d["implicit_reward_accuracy"][i] >= 0.7)
    order = np.argsort(d["betas"])
    kls = np.asarray(d["exact"]["kl"])[order]
    check("DPO: exact KL decreases as beta grows", " ".join(f"{k:.3f}" for k in kls), np.all(np.diff(kls) < 0))


def _bon_checks(b: dict[str, Any], check: Callable) -> None:
    """Best-of-n: the KL bound, the proxy's rise and gold's bend."""
    kl, bound, proxy, gold = (np.asarray(x) for x in (b["exact"]["kl"], b["kl_bound"], b["exact"]["proxy"], b["exact"]["gold"]))
    check("best-of-n: exact KL <= log n - (n-1)/n for every n (float64, to 1e-9)",
          f"largest KL - bound {np.max(kl - bound):+.2e}", np.all(kl <= bound + 1e-9))
    if 1 in b["n"]:
        one = kl[b["n"].index(1)]
        check("best-of-n: KL 0 at n = 1 (to 1e-9)", f"{one:.1e}", abs(one) <= 1e-9)
    check("best-of-n: proxy monotone in n", " ".join(f"{x:.3f}" for x in proxy), np.all(np.diff(proxy) >= -1e-5))
    top = int(np.argmax(gold))
    check("best-of-n: gold bends down for large n", f"peak {gold[top]:+.3f} at n={b['n'][top]}, "
          f"{gold[-1]:+.3f} at n={b['n'][-1]}", top < len(gold) - 1 and gold[top] - gold[-1] > 0.01)


_CHECKS = (("sft", (_sft_checks,)), ("reward", (_reward_checks,)),
           ("ppo", (_ppo_checks, _ppo_exact_checks, _overoptimisation_checks)), ("dpo", (_dpo_checks,)),
           ("bon", (_bon_checks,)))


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    if len(x) < 3:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def summary_markdown(records: dict[str, Any]) -> str:
    lines = ["# RLHF study", ""]
    rows = result_rows(records)
    if rows:
        lines += ["Exact figures by enumeration of every response (KL in nats per response; proxy in the reward",
                  "model's standard deviations on reference samples; gold in G's standard deviations; win rate",
                  "against the reference on gold).", "",
                  "| method | setting | exact KL | proxy | gold | win rate |", "|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['method']} | {r['setting']} | {r['exact_kl']:.3f} | {r['proxy']:+.3f} | {r['gold']:+.3f} "
                         f"| {r['win_rate']:.3f} |")
        lines.append("")
    cs = checks(records)
    if cs:
        lines += ["## Checks", "", "| property | measured | holds |", "|---|---|---|"]
        lines += [f"| {w} | {m} | {'yes' if h else '**no**'} |" for w, m, h in cs]
        lines.append("")
    secs = {k: r["seconds"] for k, r in records.items() if r}
    if secs:
        lines += ["Stage times: " + ", ".join(f"{k} {v} s" for k, v in secs.items()), ""]
    last = [r for r in records.values() if r and "environment" in r]
    if last:
        env = last[-1]["environment"]
        if env.get("command"):
            lines += [f"Command: `{env['command']}`", ""]
        lines += [f"Commit {env['commit']}; {', '.join(f'{k} {v}' for k, v in env['versions'].items())}; Python "
                  f"{env['python']}; {env['device']}, {env['cpu_count']} CPU cores; {env['date']}.", ""]
    return "\n".join(lines)


def plots(out: str, records: dict[str, Any]) -> None:
    """``frontier.png``, ``ppo_curves.png`` and ``overoptimisation.png`` (each when its stages ran)."""
    anyrec = next((r for k, r in records.items() if r and k != "sft"), None)
    if anyrec is None:
        return
    front, ref = anyrec["frontier"], anyrec["reference"]
    p, d, b = records.get("ppo"), records.get("dpo"), records.get("bon")
    _plot_frontier(os.path.join(out, "frontier.png"), front, ref, p, d, b)
    if p:
        _plot_ppo_curves(os.path.join(out, "ppo_curves.png"), p)
    if p or b:
        _plot_overoptimisation(os.path.join(out, "overoptimisation.png"), front, p, b)


def _plot_frontier(path: str, front, ref, p, d, b) -> None:
    """Proxy and gold against the exact KL: the exact optimum, the reference and every method."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2))
    for ax, key in zip(fig.subplots(1, 2), ("proxy", "gold")):
        ax.plot(front["kl"], front[key], color="black", lw=1.5, label="exact optimum ref*exp(proxy/beta)")
        ax.scatter([0], [ref[key]], color="gray", zorder=3, label="reference")
        if p:
            for v, name in enumerate(p["variants"]):
                ax.plot(p["exact"]["kl"][v], p["exact"][key][v], marker="o", ms=3, label=f"PPO {name}")
        if d:
            ax.scatter(d["exact"]["kl"], d["exact"][key], marker="s", zorder=3, label="DPO")
        if b:
            ax.plot(b["exact"]["kl"], b["exact"][key], marker="^", ms=4, ls=":", label="best-of-n")
        ax.set_xscale("symlog", linthresh=0.1)
        ax.set_xlabel("exact KL(pi || ref), nats")
        ax.set_ylabel(f"{key} reward (exact mean)")
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=7)
    fig.tight_layout()
    FigureCanvasAgg(fig).print_png(path)


def _plot_ppo_curves(path: str, p) -> None:
    """The PPO variants' sampled proxy, gold, KL and beta over the iterations."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 6))
    axes = fig.subplots(2, 2).ravel()
    for ax, key, label in zip(axes, ("proxy", "gold", "kl", "kl_coef"),
                              ("proxy (sampled)", "gold (sampled)", "sampled KL, nats", "beta")):
        for v, name in enumerate(p["variants"]):
            ax.plot(p["history"][key][v], label=name)
        if key == "kl":
            ax.axhline(p["hparams"]["kl_target"][0], color="gray", ls="--", lw=1, label="target")
        ax.set_xlabel("iteration")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    axes[3].set_yscale("log")
    fig.tight_layout()
    FigureCanvasAgg(fig).print_png(path)


def _plot_overoptimisation(path: str, front, p, b) -> None:
    """Proxy and gold of PPO with beta ~ 0 and of best-of-n against the exact KL."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.2))
    ax = fig.subplots()
    ax.plot(front["kl"], front["gold"], color="black", lw=1, label="gold of the exact proxy optimum")
    if p:
        h = p["variants"].index("beta~0")
        ax.plot(p["exact"]["kl"][h], p["exact"]["proxy"][h], marker="o", ms=3, label="PPO beta~0: proxy")
        ax.plot(p["exact"]["kl"][h], p["exact"]["gold"][h], marker="o", ms=3, label="PPO beta~0: gold")
    if b:
        ax.plot(b["exact"]["kl"], b["exact"]["proxy"], marker="^", ms=4, ls=":", label="best-of-n: proxy")
        ax.plot(b["exact"]["kl"], b["exact"]["gold"], marker="^", ms=4, ls=":", label="best-of-n: gold")
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_xlabel("exact KL(pi || ref), nats")
    ax.set_ylabel("reward (exact mean)")
    ax.set_title("over-optimisation of the proxy", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    FigureCanvasAgg(fig).print_png(path)
