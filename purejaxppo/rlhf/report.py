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
    for stage in ("ppo", "grpo", "rloo"):
        rec = records.get(stage)
        for v, name in enumerate(rec["variants"] if rec else ()):
            h = {k: rec["hparams"][k][v] for k in ("kl_coef", "kl_target", "kl_horizon")}
            # A fixed beta has an infinite horizon, written as null.
            fixed = h["kl_horizon"] is None or not math.isfinite(h["kl_horizon"])
            setting = f"beta={h['kl_coef']:g}" if fixed else f"beta0={h['kl_coef']:g} target={h['kl_target']:g}"
            row(f"{stage}-{name}", setting, _ppo_final(rec, v))
    if records.get("dpo"):
        rec = records["dpo"]
        for i, beta in enumerate(rec["betas"]):
            row("dpo", f"beta={beta:g}", {f: rec["exact"][f][i] for f in ("kl", "proxy", "gold", "win_rate")})
    if records.get("bon"):
        rec = records["bon"]
        for i, n in enumerate(rec["n"]):
            row("best-of-n", f"n={n}", {f: rec["exact"][f][i] for f in ("kl", "proxy", "gold", "win_rate")})
    if records.get("ensemble"):
        _ensemble_rows(records["ensemble"], row)
    return rows


def _ensemble_rows(rec: dict[str, Any], row: Callable) -> None:
    """PPO and GRPO (beta ~ 0) at their last evaluation, best-of-n at every n, per objective."""
    for i, obj in enumerate(rec["objectives"]):
        for method in ("ppo", "grpo"):
            row(f"{method}-beta~0-ensemble", obj, _ppo_final(rec[method], i))
        for j, n in enumerate(rec["bon"]["n"]):
            row("best-of-n-ensemble", f"{obj} n={n}", {f: rec["bon"][obj][f][j] for f in ("kl", "proxy", "gold", "win_rate")})


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


def _group_checks(name: str) -> Callable:
    """GRPO's or RLOO's checks: gold gained, the adaptive KL on target, the first steps."""

    def run(g: dict[str, Any], check: Callable) -> None:
        ref, a = g["reference"], g["variants"].index("adaptive")
        fin = _ppo_final(g, a)
        hist = {k: np.asarray(v[a]) for k, v in g["history"].items()}
        target = g["hparams"]["kl_target"][a]
        last = hist["kl"][int(0.8 * len(hist["kl"])):].mean()
        check(f"{name} (adaptive): gold >= reference + 0.3 sigma", f"{fin['gold']:+.3f} vs {ref['gold']:+.3f}",
              fin["gold"] >= ref["gold"] + 0.3)
        check(f"{name} (adaptive): mean sampled KL over the last 20% within [0.5, 1.5] x target",
              f"{last:.3f} nats, target {target:g}", 0.5 * target <= last <= 1.5 * target)
        first = max(np.max(np.asarray(v)) for v in g["history"]["first_ratio_dev"])
        check(f"{name}: ratio 1 on every iteration's first minibatch and sampled KL 0 at the start",
              f"max |ratio - 1| {first:.1e}, first KL {hist['kl'][0]:.1e}", first < 1e-4 and abs(hist["kl"][0]) < 1e-4)

    return run


_CHECKS = (("sft", (_sft_checks,)), ("reward", (_reward_checks,)),
           ("ppo", (_ppo_checks, _ppo_exact_checks, _overoptimisation_checks)), ("dpo", (_dpo_checks,)),
           ("bon", (_bon_checks,)), ("grpo", (_group_checks("GRPO"),)), ("rloo", (_group_checks("RLOO"),)))


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
    lines += comparison_sections(records)
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
        lines += [(f"Commit {env['commit']}; {', '.join(f'{k} {v}' for k, v in env['versions'].items())}; Python "
                  f"{env['python']}; {env['device']}, {env['cpu_count']} CPU cores; {env['date']}."), ""]
    return "\n".join(lines)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:+.3f}"


def comparison_sections(records: dict[str, Any]) -> list[str]:
    """Gold at matched exact KL, over-optimisation, Gao et al.'s fits and the ensembles (markdown lines)."""
    from purejaxppo.rlhf import compare

    table = compare.matched_kl_table(records)
    if len(table) < 2:
        return []
    grid = compare.KL_GRID
    lines = ["## Gold at matched exact KL", "",
             "The gold where each run's exact KL first reaches the value, interpolated between its two measured",
             "points around it; a family's figure is its best run (- : no run reaches it).", "",
             "| method | " + " | ".join(f"gold at KL {k:g}" for k in grid) + " |", "|---" * (len(grid) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(_fmt(g) for g in golds) + " |" for name, golds in table.items()]
    lines += ["", "## Over-optimisation", "", "Gold drop from its peak along each run (exact evaluations).", "",
              "| run | gold peak | at KL | final gold | final KL | drop |", "|---|---|---|---|---|---|"]
    for name, (kl, gold) in compare.single_runs(records).items():
        o = compare.overoptimisation(kl, gold)
        lines.append(f"| {name} | {o['peak']:+.3f} | {o['peak_kl']:.2f} | {o['final']:+.3f} | {float(np.asarray(kl)[-1]):.2f} "
                     f"| {o['drop']:.3f} |")
    lines += ["", *_gao_lines(compare.gao_fits(records))]
    if records.get("ensemble"):
        lines += _ensemble_lines(records["ensemble"], records)
    return lines


def _gao_lines(fits: dict[str, dict[str, Any]]) -> list[str]:
    """Gao, Schulman & Hilton (2022)'s forms against the exact curves."""
    if not fits:
        return []
    lines = ["## Gao et al.'s functional forms", "",
             "Least squares on the exact points (d = sqrt(KL), gold from the reference's): best-of-n",
             "`d (alpha - beta d)`, RL `d (alpha - beta log d)` (Gao, Schulman & Hilton 2022, arXiv:2210.10760).", "",
             "| curve | form | alpha | beta | R^2 | largest residual | points |", "|---|---|---|---|---|---|---|"]
    for name, f in fits.items():
        lines.append(f"| {name} | {f['form']} | {f['alpha']:.3f} | {f['beta']:.3f} | {f['r2']:.3f} | "
                     f"{f['max_residual']:.3f} | {f['points']} |")
    return lines + [""]


def _ensemble_lines(e: dict[str, Any], records: dict[str, Any]) -> list[str]:
    """The ensemble against the single reward model, and its spread against the gold peak."""
    from purejaxppo.rlhf import compare

    lines = ["## Reward-model ensembles", "",
             (f"{e['members']} reward models (bootstrap resamples of the pairs, own seeds), one vmapped program; held-out "
             f"accuracy {', '.join(f'{a:.3f}' for a in e['member_accuracy'])} (their mean's: {e['mean_accuracy']:.3f}). "
             f"Objectives (Coste et al. 2023, arXiv:2310.02743): {', '.join(e['objectives'])}; beta ~ 0."), "",
             "| objective | method | gold peak (KL) | final gold (KL) | drop | spread rises at iter | gold peaks at iter |",
             "|---|---|---|---|---|---|---|"]
    for i, obj in enumerate(e["objectives"]):
        for method in ("ppo", "grpo"):
            r = e[method]
            kl, gold = r["exact"]["kl"][i], r["exact"]["gold"][i]
            o = compare.overoptimisation(kl, gold)
            w = compare.spread_warning(range(len(r["history"]["spread"][i])), r["history"]["spread"][i],
                                       r["eval_iterations"], gold)
            lines.append(f"| {obj} | {method.upper()} | {o['peak']:+.3f} ({o['peak_kl']:.2f}) | {o['final']:+.3f} "
                         f"({kl[-1]:.2f}) | {o['drop']:.3f} | {w['rise_iteration'] if w['rise_iteration'] is not None else 'never'} "
                         f"| {w['gold_peak_iteration']} |")
        b = e["bon"][obj]
        o = compare.overoptimisation(b["kl"], b["gold"])
        lines.append(f"| {obj} | best-of-n | {o['peak']:+.3f} ({o['peak_kl']:.2f}) | {o['final']:+.3f} ({b['kl'][-1]:.2f}) "
                     f"| {o['drop']:.3f} | - | - |")
    single = compare.single_runs(records)
    for name in ("PPO beta~0", "GRPO beta~0", "best-of-n"):
        if name in single:
            o = compare.overoptimisation(*single[name])
            lines.append(f"| single model | {name} | {o['peak']:+.3f} ({o['peak_kl']:.2f}) | {o['final']:+.3f} "
                         f"({float(np.asarray(single[name][0])[-1]):.2f}) | {o['drop']:.3f} | - | - |")
    lines += ["", ("The spread is the members' standard deviation of the normalised proxy, averaged over each "
              "iteration's samples; it \"rises\" when its 5-iteration mean first exceeds 1.5x its start."), ""]
    for method in ("ppo", "grpo"):
        r = e[method]
        kl, spread, gold = (np.asarray(r["exact"]["kl"][0]), np.asarray(r["exact_spread"][0]),
                            np.asarray(r["exact"]["gold"][0]))
        top = int(np.argmax(gold))
        lines.append(f"- {method.upper()} beta~0, mean objective: exact spread E_pi[std_m proxy_m] {spread[0]:.3f} at the "
                     f"reference, {spread[top]:.3f} at the gold peak (KL {kl[top]:.2f}), {spread[-1]:.3f} at the end "
                     f"(KL {kl[-1]:.2f}); Spearman with KL {_spearman(kl, spread):+.2f}.")
    return lines + [""]


def plots(out: str, records: dict[str, Any]) -> None:
    """``frontier.png``, ``ppo_curves.png`` and ``overoptimisation.png`` (each when its stages ran)."""
    anyrec = next((r for k, r in records.items() if r and k != "sft"), None)
    if anyrec is None:
        return
    front, ref = anyrec["frontier"], anyrec["reference"]
    p, d, b = records.get("ppo"), records.get("dpo"), records.get("bon")
    g, r, e = records.get("grpo"), records.get("rloo"), records.get("ensemble")
    _plot_frontier(os.path.join(out, "frontier.png"), front, ref, p, d, b, g, r, e)
    if p:
        _plot_ppo_curves(os.path.join(out, "ppo_curves.png"), p)
    if p or b:
        _plot_overoptimisation(os.path.join(out, "overoptimisation.png"), front, p, b, e)


def _family_panels(p, d, b, g, r, e) -> list[tuple[str, list[tuple[str, dict[str, Any], str]]]]:
    """``(title, [(label, {"kl": ..., "proxy": ..., "gold": ...}, marker)])`` per method family present."""
    def runs(rec, prefix):
        return [(f"{prefix} {v}", {k: rec["exact"][k][i] for k in ("kl", "proxy", "gold")}, "o")
                for i, v in enumerate(rec["variants"])]

    panels = [(name, runs(rec, name)) for name, rec in (("PPO", p), ("GRPO", g), ("RLOO", r)) if rec]
    other = []
    if d:
        order = np.argsort(d["exact"]["kl"])
        other.append(("DPO (betas)", {k: np.asarray(d["exact"][k])[order] for k in ("kl", "proxy", "gold")}, "s"))
    if b:
        other.append(("best-of-n", b["exact"], "^"))
    if other:
        panels.append(("DPO and best-of-n", other))
    if e:
        ens = [(f"{m.upper()} beta~0, {obj}", {k: e[m]["exact"][k][i] for k in ("kl", "proxy", "gold")}, "o")
               for m in ("ppo", "grpo") for i, obj in enumerate(e["objectives"])]
        ens += [(f"best-of-n, {obj}", e["bon"][obj], "^") for obj in e["objectives"]]
        panels.append(("ensembles (beta ~ 0)", ens))
    return panels


def _plot_frontier(path: str, front, ref, p, d, b, g=None, r=None, e=None) -> None:
    """Proxy (top) and gold (bottom) against the exact KL, one column per method family: the exact
    optimum's curve and each run's measured points only, on a linear KL axis (a straight segment
    between two achievable points lies under the optimum's concave proxy curve, as it must)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = _family_panels(p, d, b, g, r, e)
    cols = max(len(panels), 1)
    fig = Figure(figsize=(4.2 * cols, 7.2))
    axes = np.asarray(fig.subplots(2, cols, squeeze=False))
    for c, (title, runs) in enumerate(panels or [("", [])]):
        for row, key in enumerate(("proxy", "gold")):
            ax = axes[row, c]
            ax.plot(front["kl"], front[key], color="black", lw=1.5, label="exact optimum")
            ax.scatter([0], [ref[key]], color="gray", zorder=3, label="reference")
            for label, pts, marker in runs:
                ax.plot(pts["kl"], pts[key], marker=marker, ms=3, lw=0.8, label=label)
            top = max([max(np.asarray(pts["kl"])) for _, pts, _ in runs] or [1.0])
            ax.set_xlim(-0.02 * top, 1.05 * top)
            ax.set_xlabel("exact KL(pi || ref), nats (linear)")
            ax.set_ylabel(f"{key} (exact mean)")
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(title, fontsize=10)
                ax.legend(fontsize=6)
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


def _plot_overoptimisation(path: str, front, p, b, e=None) -> None:
    """Proxy and gold of PPO with beta ~ 0 and of best-of-n against the exact KL; with an ensemble,
    the gold of each objective beside the single model's, and the spread against the gold peak."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6 if e is None else 17, 4.2))
    axes = np.atleast_1d(fig.subplots(1, 1 if e is None else 3))
    ax = axes[0]
    ax.plot(front["kl"], front["gold"], color="black", lw=1, label="gold of the exact proxy optimum")
    if p:
        h = p["variants"].index("beta~0")
        ax.plot(p["exact"]["kl"][h], p["exact"]["proxy"][h], marker="o", ms=3, label="PPO beta~0: proxy")
        ax.plot(p["exact"]["kl"][h], p["exact"]["gold"][h], marker="o", ms=3, label="PPO beta~0: gold")
    if b:
        ax.plot(b["exact"]["kl"], b["exact"]["proxy"], marker="^", ms=4, ls=":", label="best-of-n: proxy")
        ax.plot(b["exact"]["kl"], b["exact"]["gold"], marker="^", ms=4, ls=":", label="best-of-n: gold")
    ax.set_xlabel("exact KL(pi || ref), nats (linear)")
    ax.set_ylabel("reward (exact mean)")
    ax.set_title("over-optimisation of the proxy (single reward model)", fontsize=10)
    if e is not None:
        _ensemble_panels(axes[1], axes[2], e, p, b)
    for a in axes:
        a.grid(alpha=0.3)
        a.legend(fontsize=6)
    fig.tight_layout()
    FigureCanvasAgg(fig).print_png(path)


def _ensemble_panels(gold_ax, spread_ax, e, p, b) -> None:
    """Gold against exact KL per objective (and the single model); spread and gold per iteration."""
    if p:
        h = p["variants"].index("beta~0")
        gold_ax.plot(p["exact"]["kl"][h], p["exact"]["gold"][h], color="black", marker="o", ms=3, label="PPO, single")
    if b:
        gold_ax.plot(b["exact"]["kl"], b["exact"]["gold"], color="black", marker="^", ms=3, ls=":", label="BoN, single")
    for i, obj in enumerate(e["objectives"]):
        gold_ax.plot(e["ppo"]["exact"]["kl"][i], e["ppo"]["exact"]["gold"][i], marker="o", ms=3, label=f"PPO, {obj}")
        gold_ax.plot(e["grpo"]["exact"]["kl"][i], e["grpo"]["exact"]["gold"][i], marker="s", ms=3, ls="--",
                     label=f"GRPO, {obj}")
        gold_ax.plot(e["bon"][obj]["kl"], e["bon"][obj]["gold"], marker="^", ms=3, ls=":", label=f"BoN, {obj}")
    gold_ax.set_xlabel("exact KL(pi || ref), nats (linear)")
    gold_ax.set_ylabel("gold (exact mean)")
    gold_ax.set_title(f"ensemble of {e['members']} reward models, beta ~ 0", fontsize=10)
    twin = spread_ax.twinx()
    for m, ls in (("ppo", "-"), ("grpo", "--")):
        spread_ax.plot(e[m]["history"]["spread"][0], ls=ls, lw=0.8, label=f"{m.upper()} (mean): spread, sampled")
        twin.plot(e[m]["eval_iterations"], e[m]["exact"]["gold"][0], ls=ls, marker="o", ms=3, color="black",
                  label=f"{m.upper()} (mean): gold, exact")
    spread_ax.set_xlabel("iteration")
    spread_ax.set_ylabel("members' std of the proxy")
    twin.set_ylabel("gold (exact)")
    twin.legend(fontsize=6, loc="lower right")
    spread_ax.set_title("ensemble spread against the gold", fontsize=10)
