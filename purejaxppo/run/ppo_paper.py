"""The PPO paper's own comparisons: Table 1 (which surrogate objective) and Figure 3 (PPO against TRPO).

Schulman et al., "Proximal Policy Optimization Algorithms" (2017), section 6.1. Eleven settings of
the surrogate objective (no clipping or penalty; clipping at epsilon 0.1, 0.2, 0.3; an adaptive KL
penalty with d_targ 0.003, 0.01, 0.03; a fixed KL penalty with beta 0.3, 1, 3, 10) on seven MuJoCo
tasks, 1M steps, 3 seeds, one environment, horizon 2048, Adam 3e-4, 10 epochs of minibatches of 64,
gamma 0.99, lambda 0.95, 64 x 64 tanh networks without shared parameters, no entropy bonus. A
run's score is the mean total reward of its last 100 episodes, shifted and scaled per task so that
a random policy scores 0 and the best setting 1, then averaged over tasks and seeds.

``purejaxppo reproduce ppo-paper`` (:func:`run_paper`) trains, per task, one program per static
variant (no penalty, fixed, adaptive: the settings of each, and the seeds, vmapped in it) and
TRPO (Figure 3) with the same budget, and writes ``results/ppo-paper/``: ``results.csv`` (a row per
task, setting and seed), ``summary.md`` (Table 1 beside the published numbers, with intervals, and
the ordering checks), ``meta.json``, ``figure3.png`` (PPO clip 0.2 against TRPO, per task).

The full protocol (7 tasks x 11 settings x 3 seeds x 1M steps, plus TRPO) is sized for an
accelerator: ``purejaxppo reproduce ppo-paper``. ``--task``, ``--steps``, ``--seeds`` and
``--backend`` run a smaller, labelled protocol.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable

import numpy as np

from purejaxppo.errors import ConfigError

SOURCE = ("Schulman et al., Proximal Policy Optimization Algorithms (2017), Table 1 (surrogate objectives) and "
          "Figure 3 (PPO against TRPO)")
# The paper's MuJoCo tasks (Gym v1), through Brax: HalfCheetah, Hopper, InvertedDoublePendulum,
# InvertedPendulum, Reacher, Swimmer, Walker2d.
TASKS = ("halfcheetah", "hopper", "inverted_double_pendulum", "inverted_pendulum", "reacher", "swimmer", "walker2d")
DEFAULT_BACKEND = "mjx"  # MuJoCo's own physics (docs/environments.md: the fidelity table)
FULL_STEPS = 1_000_000
FULL_SEEDS = 3
LAST_EPISODES = 100


@dataclasses.dataclass(frozen=True)
class Setting:
    """One row of Table 1: a label, the published average normalised score, and the config changes."""

    label: str
    published: float
    changes: dict

    @property
    def variant(self) -> str:
        """The static part (one compiled program per variant): the KL penalty."""
        return self.changes.get("kl_penalty", "off")


SETTINGS = (
    Setting("no clipping or penalty", -0.39, {"clip_eps": 0.0}),
    Setting("clipping, eps = 0.1", 0.76, {"clip_eps": 0.1}),
    Setting("clipping, eps = 0.2", 0.82, {"clip_eps": 0.2}),
    Setting("clipping, eps = 0.3", 0.70, {"clip_eps": 0.3}),
    Setting("adaptive KL, d_targ = 0.003", 0.68, {"clip_eps": 0.0, "kl_penalty": "adaptive", "kl_target": 0.003}),
    Setting("adaptive KL, d_targ = 0.01", 0.74, {"clip_eps": 0.0, "kl_penalty": "adaptive", "kl_target": 0.01}),
    Setting("adaptive KL, d_targ = 0.03", 0.71, {"clip_eps": 0.0, "kl_penalty": "adaptive", "kl_target": 0.03}),
    Setting("fixed KL, beta = 0.3", 0.62, {"clip_eps": 0.0, "kl_penalty": "fixed", "kl_coef": 0.3}),
    Setting("fixed KL, beta = 1", 0.71, {"clip_eps": 0.0, "kl_penalty": "fixed", "kl_coef": 1.0}),
    Setting("fixed KL, beta = 3", 0.72, {"clip_eps": 0.0, "kl_penalty": "fixed", "kl_coef": 3.0}),
    Setting("fixed KL, beta = 10", 0.69, {"clip_eps": 0.0, "kl_penalty": "fixed", "kl_coef": 10.0}),
)
CLIP_02 = "clipping, eps = 0.2"
NO_CLIP = "no clipping or penalty"
TRPO = "TRPO"


def paper_config(env: str, steps: int):
    """The paper's PPO settings for the MuJoCo tasks (section 6.1 and its Table 3)."""
    from purejaxppo.core.config import PPOConfig

    return PPOConfig(
        env=env, total_timesteps=steps, num_envs=1, num_steps=2048, num_minibatches=32, update_epochs=10,
        lr=3e-4, anneal_lr=False, gamma=0.99, gae_lambda=0.95, actor_hidden=(64, 64), critic_hidden=(64, 64),
        activation="tanh", shared_torso=False, ent_coef=0.0, vf_coef=1.0, clip_vloss=False,
        max_grad_norm=1e6,  # no gradient clipping in the paper
        normalize_obs=True,
    )


def trpo_config(env: str, steps: int):
    """TRPO with the same rollouts and critic networks: max_kl 0.01 (the paper's TRPO), conjugate
    gradient 10 iterations with damping 0.1; the critic fitted by 5 Adam epochs at 1e-3."""
    return paper_config(env, steps).replace(algo="trpo", max_kl=0.01, cg_damping=0.1, cg_iters=10,
                                            backtrack_iters=10, backtrack_ratio=0.8, update_epochs=5, lr=1e-3)


def tiny(config):
    """The same programs at a budget that checks the plumbing: 2 updates of one env x 64 steps."""
    return config.replace(num_steps=64, num_minibatches=2, update_epochs=1, total_timesteps=128)


def last_episodes_mean(returns: np.ndarray, counts: np.ndarray, n: int = LAST_EPISODES) -> np.ndarray:
    """Mean total reward of the last ``n`` episodes of each run, from per-update means ``returns
    [..., U]`` and episode counts ``counts [..., U]``: updates taken from the last backwards, the
    oldest one weighted by the episodes it still contributes. NaN for a run without episodes."""
    r = np.where(counts > 0, np.nan_to_num(np.asarray(returns, np.float64)), 0.0)
    c = np.asarray(counts, np.float64)
    after = np.cumsum(c[..., ::-1], axis=-1)[..., ::-1] - c  # episodes in the later updates
    weight = np.clip(n - after, 0.0, c)
    total = weight.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (weight * r).sum(axis=-1) / np.maximum(total, 1e-12), np.nan)


@dataclasses.dataclass
class TaskRuns:
    env: str
    scores: dict  # setting label -> [S] last-100-episode mean per seed
    curves: dict  # label -> [S, U] training return per update
    curve_steps: np.ndarray  # [U]
    random_return: float
    seconds: float


def _train(config, n_settings_hparams: list, seeds: int, seed: int):
    """Train ``len(hparams) x seeds`` agents of ``config``'s program; metrics ``[settings, seeds, U]``."""
    import jax

    from purejaxppo.core.config import HParams
    from purejaxppo.core.train import make_trainer
    from purejaxppo.scale.agents import run_agents

    trainer = make_trainer(config)
    rows = [HParams.from_config(c) for c in n_settings_hparams for _ in range(seeds)]
    hparams = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *rows)
    keys = jax.random.split(jax.random.key(seed), seeds)
    keys = jax.random.wrap_key_data(np.tile(np.asarray(jax.random.key_data(keys)), (len(n_settings_hparams), 1)))
    _, metrics = run_agents(trainer, keys, hparams)
    shape = (len(n_settings_hparams), seeds)
    return trainer, {k: np.asarray(v).reshape(shape + np.shape(v)[1:]) for k, v in metrics.items()}


def run_task(env: str, steps: int, seeds: int, is_tiny: bool, log: Callable[[str], None] = print) -> TaskRuns:
    """Every setting of Table 1 and TRPO on ``env``: one program per KL-penalty variant, and TRPO's."""
    import jax

    from purejaxppo.run.evaluate import random_policy_return

    base = paper_config(env, steps)
    shrink = tiny if is_tiny else (lambda c: c)
    scores, curves, t0, trainer = {}, {}, time.perf_counter(), None
    for variant in ("off", "adaptive", "fixed"):
        group = [s for s in SETTINGS if s.variant == variant]
        configs = [shrink(base.replace(**s.changes)) for s in group]
        trainer, metrics = _train(configs[0], configs, seeds, base.seed)
        for i, s in enumerate(group):
            scores[s.label] = last_episodes_mean(metrics["charts/episodic_return"][i], metrics["charts/episodes"][i])
            curves[s.label] = metrics["charts/episodic_return"][i]
        log(f"  {env} {variant}: " + ", ".join(f"{s.label} {np.nanmean(scores[s.label]):.4g}" for s in group))
    trpo = shrink(trpo_config(env, steps))
    _, metrics = _train(trpo, [trpo], seeds, base.seed)
    scores[TRPO] = last_episodes_mean(metrics["charts/episodic_return"][0], metrics["charts/episodes"][0])
    curves[TRPO] = metrics["charts/episodic_return"][0]
    log(f"  {env} TRPO: {np.nanmean(scores[TRPO]):.4g} (accepted {np.mean(metrics['trpo/accepted']):.2f} of steps)")
    config = shrink(base)
    random_ret = random_policy_return(trainer, 16 if is_tiny else 100, jax.random.key(777))
    return TaskRuns(env, scores, curves, np.arange(1, config.num_updates + 1) * config.batch_size, random_ret,
                    time.perf_counter() - t0)


def normalised_scores(runs: list[TaskRuns]) -> dict:
    """Per Table 1 setting, ``[tasks, seeds]`` of ``(score - random) / (best setting's mean - random)``:
    0 the random policy, 1 the best of the eleven settings on that task (TRPO scaled the same way)."""
    out: dict = {label: [] for label in [s.label for s in SETTINGS] + [TRPO]}
    for r in runs:
        best = max(np.nanmean(r.scores[s.label]) for s in SETTINGS)
        span = best - r.random_return
        span = span if abs(span) > 1e-9 else 1.0
        for label, scores in out.items():
            scores.append((r.scores[label] - r.random_return) / span)
    return {k: np.stack(v) for k, v in out.items()}


def summarise(runs: list[TaskRuns], seeds: int, steps: int, backend: str, is_tiny: bool, label: str,
              command: str) -> dict:
    from purejaxppo.run.reproduce import environment_info
    from purejaxppo.scale.stats import bootstrap_ci

    norm = normalised_scores(runs)
    rows = []
    for i, label_ in enumerate([s.label for s in SETTINGS] + [TRPO]):
        v = norm[label_].reshape(-1)
        lo, hi = bootstrap_ci(v, key=i)
        published = next((s.published for s in SETTINGS if s.label == label_), None)
        rows.append({"setting": label_, "published": published, "ours": float(np.nanmean(v)), "ci95": [lo, hi]})
    ours = {r["setting"]: r["ours"] for r in rows if r["setting"] != TRPO}
    best = max(ours.values())
    checks = {
        "clipping at 0.2 best or tied (within 0.05 of the best)": bool(ours[CLIP_02] >= best - 0.05),
        "no clipping worst": bool(ours[NO_CLIP] <= min(ours.values()) + 1e-12),
        "no clipping below 0": bool(ours[NO_CLIP] < 0),
    }
    return {
        "suite": "ppo-paper", "source": SOURCE, "label": label, "tiny": is_tiny, "seeds": seeds, "env_steps": steps,
        "backend": backend, "tasks": [r.env for r in runs], "command": command, "rows": rows, "checks": checks,
        "per_task": [{"task": r.env, "random": r.random_return, "seconds": r.seconds,
                      "means": {k: float(np.nanmean(v)) for k, v in r.scores.items()}} for r in runs],
        "environment": environment_info(),
    }


def summary_markdown(s: dict) -> str:
    env = s["environment"]
    full = (not s["tiny"]) and len(s["tasks"]) == len(TASKS) and s["seeds"] >= FULL_SEEDS and s["env_steps"] >= FULL_STEPS
    lines = [
        "# PPO paper, Table 1 and Figure 3" + ("" if full else f" ({s['label']})"), "",
        f"Source: {s['source']}.", "",
        f"Protocol of this run: {', '.join(s['tasks'])}, "
        f"{s['env_steps']:,} env steps per run, {s['seeds']} seed(s), one environment, horizon 2048, Adam 3e-4, "
        "10 epochs of minibatches of 64, gamma 0.99, lambda 0.95, 64 x 64 tanh networks, no shared parameters, no "
        "entropy bonus. Score: mean total reward of the last 100 episodes, 0 = random policy and 1 = the best of "
        "the 11 settings per task, averaged over tasks and seeds"
        + ("." if full else "; the paper's: 7 tasks, 1M steps, 3 seeds (`purejaxppo reproduce ppo-paper`)."), "",
        "| setting | published | ours | 95% interval |", "|---|---|---|---|",
    ]
    for r in s["rows"]:
        pub = "-" if r["published"] is None else f"{r['published']:.2f}"
        lines.append(f"| {r['setting']} | {pub} | {r['ours']:.2f} | [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}] |")
    lines += ["", "TRPO (Figure 3's comparison) is scaled by the same per-task random and best-setting returns.", "",
              "Ordering (what must reproduce):"]
    lines += [f"- {k}: {'yes' if v else 'no'}" for k, v in s["checks"].items()]
    lines += ["", "Per task, mean over seeds of the last-100-episode return:", "",
              "| task | random | " + " | ".join(r["setting"] for r in s["rows"]) + " |",
              "|---|---|" + "---|" * len(s["rows"])]
    for t in s["per_task"]:
        lines.append(f"| {t['task']} | {t['random']:.4g} | " + " | ".join(f"{t['means'][r['setting']]:.4g}"
                                                                          for r in s["rows"]) + " |")
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    lines += ["", ("Intervals: percentile bootstrap of the mean over the (task, seed) scores; with few seeds they "
                   "show the spread across tasks more than seed noise."), "",
              ("Figure 3: `figure3.png` (PPO clip 0.2 against TRPO, training return per update, mean over seeds). "
               "Per run: `results.csv`."), "",
              f"Command: `{s['command']}`", "",
              (f"Commit {env['commit']}; {versions}; Python {env['python']}; {env['device']}, {env['cpu_count']} CPU "
               f"cores ({env['machine']}); {env['date']}."), ""]
    return "\n".join(lines)


RESULT_FILES = ("results.csv", "meta.json", "summary.md", "figure3.png")


def _write(out: str, runs: list[TaskRuns], summary: dict) -> None:
    norm = normalised_scores(runs)
    with open(os.path.join(out, "results.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["task", "setting", "seed", "last100_return", "random_return", "normalised"])
        for t, r in enumerate(runs):
            for label, scores in r.scores.items():
                for seed, v in enumerate(scores):
                    w.writerow([r.env, label, seed, f"{v:.6g}", f"{r.random_return:.6g}", f"{norm[label][t, seed]:.6g}"])
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(summary, f, indent=2, default=float)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(summary_markdown(summary))
    _figure3(os.path.join(out, "figure3.png"), runs)


def _figure3(path: str, runs: list[TaskRuns]) -> None:
    import warnings

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.6 * len(runs), 3.0))
    FigureCanvasAgg(fig)
    for i, r in enumerate(runs):
        ax = fig.add_subplot(1, len(runs), i + 1)
        for label, name in ((CLIP_02, "PPO (clip 0.2)"), (TRPO, "TRPO")):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(r.curves[label], axis=0)
            ok = np.isfinite(mean)
            ax.plot(r.curve_steps[ok], mean[ok], label=name, marker="o" if ok.sum() < 10 else None)
        ax.set_title(r.env, fontsize=9)
        ax.set_xlabel("env steps")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def run_paper(tasks: list[str] | None = None, steps: int = FULL_STEPS, seeds: int = FULL_SEEDS,
              backend: str = DEFAULT_BACKEND, is_tiny: bool = False, out: str | None = None,
              command: str | None = None, log: Callable[[str], None] = print) -> dict:
    """Table 1 and Figure 3 on ``tasks`` (Brax task names, or other environment names), writing
    ``out`` (default ``results/ppo-paper``); returns the summary."""
    from purejaxppo.envs.brax_envs import BACKENDS

    if seeds < 1:
        raise ConfigError(f"reproduce --seeds: must be at least 1, got {seeds}")
    if backend not in BACKENDS:
        raise ConfigError(f"reproduce --backend: got {backend!r}; accepted: {', '.join(BACKENDS)}")
    tasks = list(tasks or TASKS)
    envs = [task_env(t, backend) for t in tasks]
    out = out or os.path.join("results", "ppo-paper")
    os.makedirs(out, exist_ok=True)
    if is_tiny:
        steps = tiny(paper_config(envs[0], steps)).total_timesteps
    runs, summary = [], {}
    for env in envs:
        log(f"ppo-paper: {env}, 11 settings + TRPO x {seeds} seed(s){' (tiny budget)' if is_tiny else ''} ...")
        runs.append(run_task(env, steps, seeds, is_tiny, log))
        # written after every task: a run stopped part way keeps the tasks it finished
        summary = summarise(runs, seeds, steps, backend, is_tiny, _label(len(runs), steps, seeds, is_tiny),
                            command or " ".join(sys.argv))
        _write(out, runs, summary)
    return summary


def task_env(task: str, backend: str) -> str:
    """``hopper -> brax/hopper-<backend>``; ``hopper-generalized -> brax/hopper-generalized`` (a backend
    chosen per task); any other name (a gymnax task, in the tests) as it is."""
    if task in TASKS:
        return f"brax/{task}-{backend}"
    if task.rsplit("-", 1)[0] in TASKS:
        return f"brax/{task}"
    return task


def _label(n_tasks: int, steps: int, seeds: int, is_tiny: bool) -> str:
    if not is_tiny and n_tasks == len(TASKS) and seeds >= FULL_SEEDS and steps >= FULL_STEPS:
        return "the paper's protocol"
    return f"smaller protocol: {n_tasks} of 7 tasks, {steps:,} steps, {seeds} seed(s)" + (", tiny" if is_tiny else "")
