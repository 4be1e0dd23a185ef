"""Reproduction suites: published PPO numbers, our presets, seeds vmapped in one program per task.

``purejaxppo reproduce SUITE`` (or :func:`run_suite`) trains every task of a suite with its
preset, N seeds in one compiled program, evaluates each final policy on deterministic test
episodes (the protocol of the published baselines), and writes ``results/<suite>/``:

* ``results.csv``: one row per task and seed (training and evaluation returns, normalised score);
* ``summary.md``: per task the published number, ours (mean over seeds, 95% bootstrap interval)
  and a verdict; across tasks the interquartile mean (IQM) of normalised scores with a
  stratified-bootstrap interval (Agarwal et al., 2021); the command, commit, versions, hardware;
* ``curves.png``: training return against env steps, mean over seeds with the min-max band;
* ``profile.png``: the performance profile (fraction of runs above each normalised score);
* ``meta.json``: everything of ``summary.md`` as data.

Normalised score: ``(ours - random) / (reference - random)``, where ``random`` is a uniformly
random policy's mean return (measured by the suite) and ``reference`` the task's optimum where it
is known, else the published number.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np

from purejaxppo.errors import ConfigError
from purejaxppo.versions import installed_versions

GYMNAX = "gymnax README, PPO baselines of gymnax-blines (github.com/RobertTLange/gymnax, column 'PPO, ES (R: ...)')"


@dataclasses.dataclass(frozen=True)
class Task:
    env: str
    published: float  # the number of the source
    target: float | None = None  # what "met" means, when not the published number (with ``note``)
    optimum: float | None = None  # the best achievable mean return, where known
    note: str = ""

    @property
    def goal(self) -> float:
        return self.published if self.target is None else self.target

    @property
    def reference(self) -> float:
        """High end of the normalised score."""
        return self.published if self.optimum is None else self.optimum


@dataclasses.dataclass(frozen=True)
class Suite:
    name: str
    source: str
    protocol: str
    tasks: tuple[Task, ...]
    eval_episodes: int = 32
    solved_fraction: float | None = None  # bsuite: a seed solves a task at >= this fraction of the optimum
    fits_cpu: bool = True
    deterministic_eval: bool = True  # the final policies' test episodes take the mode; False: they sample
    requires: str = ""  # the extra a suite's environments need (installed with pip install -e ".[EXTRA]")


CRAFTAX = ("Matthews et al., Craftax: A Lightning-Fast Benchmark for Open-Ended Reinforcement Learning (ICML 2024), "
           "1M-step results on Craftax-Symbolic in percent of the maximum return 226; the settings of "
           "Craftax_Baselines' ppo.py and ppo_rnn.py")
CRAFTAX_MAX = 226.0  # Craftax's maximum return: every achievement's reward (the scoreboard's 100%)


SUITES = {
    "gymnax-classic": Suite(
        "gymnax-classic",
        GYMNAX,
        "each preset's env steps (CartPole-v1 500k, the others 1M); the published numbers are deterministic test "
        "rollouts, so ours is the mean over seeds of 32 deterministic episodes per final policy",
        (
            Task("CartPole-v1", 500.0, optimum=500.0),
            Task("Acrobot-v1", -80.0),
            Task("Pendulum-v1", -130.0, target=-145.0, optimum=-138.0,
                 note="-130 is above the optimum: the best mean return over the start distribution is about -138 "
                      "(experiments/pendulum_optimum.py), so the target is within 5% of it, >= -145"),
            Task("MountainCarContinuous-v0", 92.0),
        ),
    ),
    "bsuite": Suite(
        "bsuite",
        GYMNAX + "; tasks of Osband et al. (2020), gymnax's default sizes (DeepSea 8, MemoryChain 5, "
        "UmbrellaChain 10)",
        "262,144 env steps per task; 10,000 deterministic episodes per final policy (UmbrellaChain's distractor "
        "rewards, +-1 on each of 9 steps, make a 32-episode mean noisy by +-0.5). A seed solves a task when its "
        "mean return is at least 90% of the task's optimum (our criterion)",
        (
            Task("Catch-bsuite", 1.0, optimum=1.0),
            Task("DeepSea-bsuite", 0.0, optimum=0.99,
                 note="the published PPO gets 0; at gymnax's default size (8, deterministic) an entropy bonus "
                      "is enough exploration"),
            Task("MemoryChain-bsuite", 0.1, optimum=1.0,
                 note="the context is shown only at the first step, so a memoryless (MLP) policy guesses: its "
                      "expected return is 0 (the published 0.1 is the same guess). The preset is feed-forward, as "
                      "the published baseline; a recurrent policy (--policy gru) solves it"),
            Task("UmbrellaChain-bsuite", 1.0, optimum=1.0,
                 note="returns include distractor rewards of mean 0, so a seed's mean return can pass 1"),
            Task("DiscountingChain-bsuite", 1.1, optimum=1.1),
        ),
        eval_episodes=10_000,
        solved_fraction=0.9,
    ),
    "minatar": Suite(
        "minatar",
        GYMNAX,
        "10M env steps per task; 32 deterministic episodes per final policy",
        (
            Task("Asterix-MinAtar", 15.0),
            Task("Breakout-MinAtar", 28.0),
            Task("Freeway-MinAtar", 58.0),
            Task("SpaceInvaders-MinAtar", 131.0),
        ),
        fits_cpu=False,
    ),
    "craftax": Suite(
        "craftax",
        CRAFTAX,
        "1M env steps per task (256 envs x 16 steps, optimistic resets); 32 episodes of each final policy, "
        "sampled as in training (the published numbers are training episodes' returns); the normalised score is "
        "the percentage of the maximum return 226 (from the random policy's return) divided by 100",
        (
            Task("craftax/Craftax-Symbolic-v1", 2.2 * CRAFTAX_MAX / 100, optimum=CRAFTAX_MAX,
                 note="PPO: 2.2% of 226 (4.97)"),
            Task("craftax/Craftax-Symbolic-v1-RNN", 2.3 * CRAFTAX_MAX / 100, optimum=CRAFTAX_MAX,
                 note="PPO-RNN (GRU 512): 2.3% of 226 (5.20)"),
        ),
        deterministic_eval=False,
        requires="craftax",
    ),
}


def get_suite(name: str) -> Suite:
    if name not in SUITES:
        raise ConfigError(f"reproduce: unknown suite {name!r}; accepted: {', '.join(SUITES)}")
    return SUITES[name]


def tiny_config(config):
    """The same program at a budget that only checks the plumbing: 2 updates of 4 envs x 16 steps, layers of
    at most 64 units (Craftax's 512-unit layers only lengthen the compile), resets shared by at most 4."""
    def narrow(widths):
        return tuple(min(w, 64) for w in widths)

    return config.replace(num_envs=4, num_steps=16, num_minibatches=2, update_epochs=1, total_timesteps=4 * 16 * 2,
                          actor_hidden=narrow(config.actor_hidden), critic_hidden=narrow(config.critic_hidden),
                          gru_hidden=min(config.gru_hidden, 64), reset_ratio=math.gcd(config.reset_ratio, 4))


@dataclasses.dataclass
class TaskResult:
    task: Task
    env_steps: int
    train_return: np.ndarray  # [S] final training return per seed
    eval_return: np.ndarray  # [S] mean of the deterministic test episodes per seed
    random_return: float
    curve_steps: np.ndarray  # [U]
    curves: np.ndarray  # [S, U] training return per update
    seconds: float

    @property
    def normalised(self) -> np.ndarray:
        span = self.task.reference - self.random_return
        return (self.eval_return - self.random_return) / (span if abs(span) > 1e-9 else 1.0)


def run_task(task: Task, seeds: int, tiny: bool, eval_episodes: int, deterministic: bool = True,
             steps: int | None = None) -> TaskResult:
    """Train ``seeds`` seeds of ``task``'s preset in one program (:func:`~purejaxppo.scale.agents.run_agents`);
    evaluate every final policy."""
    import jax

    from purejaxppo.core.config import HParams
    from purejaxppo.core.metrics import final_return
    from purejaxppo.core.presets import preset
    from purejaxppo.core.train import make_trainer
    from purejaxppo.run.evaluate import make_evaluate, random_policy_return
    from purejaxppo.scale.agents import run_agents

    config = preset(task.env)
    if tiny:
        config = tiny_config(config)
    elif steps is not None:  # a smaller (or larger) budget than the protocol's, labelled in the summary
        config = config.replace(total_timesteps=steps)
    trainer = make_trainer(config)
    hparams = jax.tree.map(lambda x: np.repeat(np.asarray(x)[None], seeds, axis=0), HParams.from_config(config))
    keys = jax.random.split(jax.random.key(config.seed), seeds)
    t0 = time.perf_counter()
    states, metrics = run_agents(trainer, keys, hparams)
    seconds = time.perf_counter() - t0
    states = jax.tree.map(lambda x: x[:seeds], states)  # without the agents that pad to the device count
    evaluate = jax.jit(jax.vmap(make_evaluate(trainer, num_episodes=eval_episodes, deterministic=deterministic)))
    eval_returns = np.asarray(evaluate(states, jax.random.split(jax.random.key(12345), seeds))).mean(axis=1)
    random_ret = random_policy_return(trainer, max(eval_episodes, 64), jax.random.key(777))
    curves = np.asarray(metrics["charts/episodic_return"])
    return TaskResult(
        task=task,
        env_steps=config.num_updates * config.batch_size,
        train_return=np.asarray(final_return(metrics)),
        eval_return=eval_returns,
        random_return=random_ret,
        curve_steps=np.arange(1, config.num_updates + 1) * config.batch_size,
        curves=curves,
        seconds=seconds,
    )


def verdict(task: Task, mean: float, low: float, high: float) -> str:
    """``above published`` (the whole 95% interval above the goal), ``met`` (the mean reaches it), or by how
    much the mean misses it, and whether the interval still reaches it."""
    goal = task.goal
    if low > goal:
        return "above published" if task.target is None else "above target"
    if mean >= goal - 1e-6 * max(1.0, abs(goal)):
        return "met"
    if high >= goal:
        return f"not met on the mean ({goal - mean:.3g} below; the 95% interval reaches it)"
    return f"not met ({goal - mean:.3g} below)"


def rewrite_summary(out: str) -> dict:
    """Recompute the verdicts and rewrite ``summary.md`` and ``meta.json`` from the numbers in ``meta.json``."""
    with open(os.path.join(out, "meta.json")) as f:
        summary = json.load(f)
    suite = get_suite(summary["suite"])
    tasks = {t.env: t for t in suite.tasks}
    for row in summary["tasks"]:
        row["verdict"] = verdict(tasks[row["task"]], row["mean"], *row["ci95"])
        row["note"] = tasks[row["task"]].note
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(summary, f, indent=2, default=float)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(summary_markdown(suite, summary))
    return summary


def _commit() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=False)
        # The result folders being written are not changes to the code that wrote them.
        top = subprocess.run(["git", "-C", here, "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                             timeout=10, check=False).stdout.strip() or here
        dirty = subprocess.run(["git", "-C", top, "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)results"], capture_output=True, text=True, timeout=10, check=False).stdout.strip()
        return (out.stdout.strip() + ("+changes" if dirty else "")) or "unknown"
    except OSError:
        return "unknown"


def environment_info() -> dict:
    import jax

    versions = installed_versions(("purejaxppo", "jax", "jaxlib", "flax", "optax", "gymnax"))
    d = jax.devices()[0]
    return {
        "commit": _commit(),
        "versions": versions,
        "python": platform.python_version(),
        "device": f"{getattr(d, 'device_kind', str(d))} x{jax.device_count()} ({jax.default_backend()})",
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
    }


# what a suite's run writes in its folder
RESULT_FILES = ("results.csv", "meta.json", "summary.md", "curves.png", "profile.png")


def run_suite(name: str, seeds: int = 5, tiny: bool = False, out: str | None = None, tasks: list[str] | None = None,
              command: str | None = None, log: Callable[[str], None] = print, steps: int | None = None) -> dict:
    """Run suite ``name`` and write its result files to ``out`` (default ``results/<name>``); returns the summary.
    ``steps`` replaces the protocol's env steps per task (the summary says so)."""
    from purejaxppo.scale.stats import bootstrap_ci, iqm, stratified_bootstrap_ci

    suite = get_suite(name)
    if seeds < 1:
        raise ConfigError(f"reproduce --seeds: must be at least 1, got {seeds}")
    chosen = list(suite.tasks)
    if tasks:
        known = {t.env for t in suite.tasks}
        unknown = [t for t in tasks if t not in known]
        if unknown:
            raise ConfigError(f"reproduce --task: {', '.join(unknown)} not in suite {name}; accepted: "
                              f"{', '.join(sorted(known))}")
        chosen = [t for t in suite.tasks if t.env in tasks]
    out = out or os.path.join("results", name)
    os.makedirs(out, exist_ok=True)
    environment = environment_info()  # the code as it was when the run started
    results = []
    for task in chosen:
        log(f"{name}: {task.env}, {seeds} seeds{' (tiny budget)' if tiny else ''} ...")
        r = run_task(task, seeds, tiny, 4 if tiny else suite.eval_episodes, suite.deterministic_eval, steps)
        results.append(r)
        log(f"  eval {np.mean(r.eval_return):.3g} per seed {np.round(r.eval_return, 3).tolist()}, "
            f"published {task.published:g}, {r.seconds:.0f} s")

    rows = []
    for i, r in enumerate(results):
        mean = float(np.mean(r.eval_return))
        lo, hi = bootstrap_ci(r.eval_return, key=i)
        row = {
            "task": r.task.env, "env_steps": r.env_steps, "published": r.task.published, "goal": r.task.goal,
            "mean": mean, "ci95": [lo, hi],
            "train_mean": float(np.nanmean(r.train_return)) if np.isfinite(r.train_return).any() else float("nan"),
            "random": r.random_return, "verdict": verdict(r.task, mean, lo, hi), "seconds": r.seconds,
            "note": r.task.note,
        }
        if suite.solved_fraction is not None:
            row["solved"] = int(np.sum(r.eval_return >= suite.solved_fraction * r.task.optimum))
        rows.append(row)
    scores = np.stack([r.normalised for r in results])  # [tasks, seeds]
    summary = {
        "suite": name, "source": suite.source, "protocol": suite.protocol, "seeds": seeds, "tiny": tiny,
        "steps": None if tiny else steps,
        "command": command or " ".join(sys.argv), "tasks": rows,
        "iqm": iqm(scores), "iqm_ci95": list(stratified_bootstrap_ci(scores, key=0)),
        "environment": environment,
    }
    _write(out, suite, results, summary)
    return summary


def _write(out: str, suite: Suite, results: list[TaskResult], summary: dict) -> None:
    with open(os.path.join(out, "results.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["task", "seed", "env_steps", "train_final_return", "eval_return", "random_return", "normalised"])
        for r in results:
            for s in range(len(r.eval_return)):
                w.writerow([r.task.env, s, r.env_steps, f"{r.train_return[s]:.6g}", f"{r.eval_return[s]:.6g}",
                            f"{r.random_return:.6g}", f"{r.normalised[s]:.6g}"])
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(summary, f, indent=2, default=float)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(summary_markdown(suite, summary))
    _plots(out, results, suite, bool(summary.get("tiny")))


def summary_markdown(suite: Suite, summary: dict) -> str:
    env = summary["environment"]
    solved = suite.solved_fraction is not None
    lines = [
        f"# Reproduction suite `{suite.name}`" + (" (tiny budget: checks the plumbing, not the numbers)"
                                                   if summary["tiny"] else ""),
        "",
        f"Source of the published numbers: {suite.source}.",
        "",
        f"Protocol: {suite.protocol}" + ("; this run used the tiny budget instead (env steps in the table)"
                                          if summary["tiny"] else "")
        + (f"; this run used {summary['steps']:,} env steps per task instead (a smaller protocol: the scores are "
           "not comparable with the published ones)" if summary.get("steps") else "")
        + f". {summary['seeds']} seeds per task, trained in one vmapped program.",
        "",
        "| task | env steps | published | ours (eval, mean over seeds) | 95% CI | train return | random policy | "
        + ("seeds solved | " if solved else "") + "verdict |",
        "|---|---|---|---|---|---|---|" + ("---|" if solved else "") + "---|",
    ]
    for t in summary["tasks"]:
        goal = "" if t["goal"] == t["published"] else f" (target {t['goal']:g})"
        lines.append(
            f"| {t['task']} | {t['env_steps']:,} | {t['published']:g}{goal} | {t['mean']:.3g} | "
            f"[{t['ci95'][0]:.3g}, {t['ci95'][1]:.3g}] | {t['train_mean']:.3g} | {t['random']:.3g} | "
            + (f"{t['solved']}/{summary['seeds']} | " if solved else "") + f"{t['verdict']} |"
        )
    lines += ["", f"Across tasks: IQM of normalised scores {summary['iqm']:.3f}, 95% stratified-bootstrap interval "
              f"[{summary['iqm_ci95'][0]:.3f}, {summary['iqm_ci95'][1]:.3f}] (normalised: 0 = random policy, "
              "1 = the task's optimum where known, else the published number)."]
    notes = [f"- {t['task']}: {t['note']}" for t in summary["tasks"] if t["note"]]
    if notes:
        lines += ["", "Notes:", *notes]
    lines += [
        "", "Figures: `curves.png` (training return, mean over seeds, min-max band), `profile.png` (performance "
        "profile). Per seed: `results.csv`.", "",
        f"Command: `{summary['command']}`", "",
        f"Commit {env['commit']}; {', '.join(f'{k} {v}' for k, v in env['versions'].items())}; Python "
        f"{env['python']}; {env['device']}, {env['cpu_count']} CPU cores ({env['machine']}); {env['date']}.", "",
    ]
    return "\n".join(lines)


def empty_curve_note(curves: np.ndarray, steps: np.ndarray, tiny: bool = False) -> str | None:
    """Why a task's panel shows no curve (``curves [seeds, points]`` all NaN: no episode ended within
    the budget, as at ``--tiny``), or None when it has points to draw."""
    if np.isfinite(curves).any():
        return None
    last = int(steps[-1]) if len(steps) else 0
    why = "\n(a --tiny budget is too small to learn)" if tiny else ""
    return f"no episode ended\nwithin {last:,} env steps{why}"


def _plots(out: str, results: list[TaskResult], suite: Suite, tiny: bool = False) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from purejaxppo.run.results import curve_band
    from purejaxppo.scale.stats import performance_profile

    n = len(results)
    fig = Figure(figsize=(4 * n, 3.2))
    FigureCanvasAgg(fig)
    for i, r in enumerate(results):
        ax = fig.add_subplot(1, n, i + 1)
        mean, lo, hi = curve_band(r.curves)
        ax.plot(r.curve_steps, mean, marker="o" if len(mean) < 10 else None)
        ax.fill_between(r.curve_steps, lo, hi, alpha=0.25)
        ax.axhline(r.task.published, color="gray", linestyle="--", label=f"published {r.task.published:g}")
        note = empty_curve_note(r.curves, r.curve_steps, tiny)
        if note is not None:  # say why the panel has no curve instead of leaving it blank
            ax.text(0.5, 0.72, note, transform=ax.transAxes, ha="center", va="center", fontsize=8)
            ax.set_xlim(0, max(1, int(r.curve_steps[-1]) if len(r.curve_steps) else 1))
        ax.set_title(r.task.env, fontsize=9)
        ax.set_xlabel("env steps")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "curves.png"), dpi=80)

    scores = np.stack([r.normalised for r in results])
    taus = np.linspace(min(0.0, scores.min()), max(1.5, scores.max()), 101)
    fig = Figure(figsize=(4.5, 3.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.step(taus, performance_profile(scores, taus), where="post")
    ax.set_xlabel("normalised score tau")
    ax.set_ylabel("fraction of runs > tau")
    ax.set_title(f"{suite.name}: performance profile", fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "profile.png"), dpi=80)
