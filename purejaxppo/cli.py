"""The ``purejaxppo`` command line: the only place that parses arguments.

Every :class:`~purejaxppo.config.PPOConfig` field is a flag named after the field in
kebab case (``num_envs`` -> ``--num-envs``), documented by the field's docstring.
Settings are resolved in this order: defaults, then the preset (by default the preset
of ``--env`` when one exists), then the flags given.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import difflib
import os
import shutil
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, NoReturn

from purejaxppo.errors import CheckpointError, ConfigError, Interrupted, PurejaxppoError, UsageError
from purejaxppo.rlhf.command import add_rlhf, cmd_rlhf
from purejaxppo.run.cache import add_cache_flag

if TYPE_CHECKING:
    from purejaxppo.core.config import PPOConfig

# JAX, Flax and the environments are imported inside the commands, after main() has installed its
# signal handlers: a Ctrl-C while they load (seconds) ends the command in one line, not in a
# KeyboardInterrupt traceback, or one swallowed by a library's import that then runs on.

PROG = "purejaxppo"
# Settings that may change when a run is resumed (the rest would make it a different run).


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and suggest close flag names."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)

    def unknown_error(self, extra: list[str]) -> NoReturn:
        bad = [e for e in extra if e.startswith("-")] or extra
        flags = [f for a in self._actions for f in a.option_strings]
        hints = []
        for b in bad:
            close = difflib.get_close_matches(b.split("=")[0], flags, n=1, cutoff=0.6)
            hints.append(f"{b} (did you mean {close[0]}?)" if close else b)
        word = "option" if len(hints) == 1 else "options"
        raise UsageError(f"unknown {word} {', '.join(hints)}; see '{self.prog} --help' for the accepted flags")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _positive_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    from purejaxppo.core.config import ACTIVATIONS, KL_PENALTIES, PPOConfig, field_docs
    from purejaxppo.core.presets import PRESETS

    docs = field_docs()
    env = PPOConfig().env
    by_preset = {k: v for k, v in PRESETS.get(env, {}).items() if k != "env"}
    group = parser.add_argument_group(
        "training settings (PPOConfig fields)",
        f"Each flag shows the plain default and, where it differs, what runs with the default --env {env} and its "
        "preset (the preset of --env applies unless --preset none; 'purejaxppo presets' lists them all).",
    )
    for f in dataclasses.fields(PPOConfig):
        kind = str(f.type)
        help_text = docs.get(f.name, "")
        default = f.default
        kw: dict[str, Any] = dict(dest=f.name, default=argparse.SUPPRESS)
        if kind == "bool":
            group.add_argument(
                _flag(f.name),
                action=argparse.BooleanOptionalAction,
                help=f"{help_text} (default: {_shown(default, by_preset, f.name, env)})",
                **kw,
            )
            continue
        if kind == "int":
            kw["type"] = _positive_int
            kw["metavar"] = "N"
        elif kind == "float":
            kw["type"] = _float
            kw["metavar"] = "X"
        elif kind.startswith("tuple"):
            kw["type"] = _positive_int
            kw["nargs"] = "+"
            kw["metavar"] = "W"
        else:
            kw["metavar"] = {"activation": "|".join(ACTIVATIONS), "kl_penalty": "|".join(KL_PENALTIES), "policy": "mlp|gru",
                             "algo": "ppo|trpo"}.get(f.name, "NAME")
        group.add_argument(_flag(f.name), help=f"{help_text} (default: {_shown(default, by_preset, f.name, env)})", **kw)


def _shown(default: Any, by_preset: dict[str, Any], name: str, env: str) -> str:
    text = " ".join(map(str, default)) if isinstance(default, tuple) else str(default)
    if name in by_preset and by_preset[name] != default:
        value = by_preset[name]
        value = " ".join(map(str, value)) if isinstance(value, tuple) else value
        text += f"; {value} with {env}'s preset"
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="PPO compiled end to end in JAX.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    parser.subcommands = sub.choices  # type: ignore[attr-defined]
    for add in (_add_train, _add_sweep, _add_eval, _add_reproduce, add_rlhf):
        add(sub)
    sub.add_parser("envs", help="list the environment names accepted by --env")
    sub.add_parser("presets", help="list the presets and their settings")
    return parser


def _add_train(sub) -> None:
    """``purejaxppo train``."""
    train = sub.add_parser("train", help="train one agent and write its results", description="Train one PPO agent.")
    _add_run_flags(train, "runs/ENV_sSEED_TIME")
    _add_long_run_flags(train)
    seed = train.add_argument_group("starting from a sweep's agent")
    seed.add_argument("--init-from", default=None, metavar="SWEEP",
                      help="start from the learned state (parameters, optimiser, normalisers) of agent --agent of the "
                      "sweep in SWEEP, with its settings and hyperparameters (flags given change them)")
    seed.add_argument("--agent", type=_positive_int, default=None, metavar="I",
                      help="with --init-from: the agent (the agent column of the sweep's results.csv)")
    add_config_flags(train)


def _add_sweep(sub) -> None:
    """``purejaxppo sweep``."""
    from purejaxppo.core.config import HPARAM_FIELDS

    sweep = sub.add_parser(
        "sweep",
        help="train seeds x hyperparameter settings in one compiled program",
        description="Train many agents at once: every seed of every setting, vmapped in one program and "
        f"sharded over the devices. Sweepable fields: {', '.join(HPARAM_FIELDS)}.",
    )
    _add_run_flags(sweep, "runs/sweep_ENV_TIME")
    add_cache_flag(sweep)
    sweep.add_argument("--num-seeds", type=_positive_int, default=1, metavar="N", help="seeds per setting (default: 1)")
    sweep.add_argument("--grid", action="append", default=[], metavar="FIELD=V1,V2,...",
                       help="values of one field; several --grid flags give their cartesian product")
    sweep.add_argument("--sample", action="append", default=[], metavar="FIELD=DIST",
                       help="random search: FIELD=uniform:LO:HI, FIELD=log-uniform:LO:HI or FIELD=choice:V1,V2,...")
    sweep.add_argument("--num-samples", type=_positive_int, default=0, metavar="K", help="random-search draws")
    sweep.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                       help="progress bar on stderr, updated after each of about 20 chunks (default: only on a terminal)")
    sweep.add_argument("--resume", action="store_true",
                       help="continue the sweep in --out from its last checkpoint (saved after every chunk), with its "
                       "saved plan and settings: the same numbers as an uninterrupted sweep")
    sweep.add_argument("--allow-safe-changes", action="store_true",
                       help="with --resume, accept a larger --total-timesteps: every agent trains on")
    pbt = sweep.add_argument_group(
        "population-based training",
        "The sweep's agents are one population: every --pbt-interval updates, inside the compiled program, the "
        "bottom fraction copies the learned state of agents drawn from the top fraction, then perturbs (x0.8 or "
        "x1.25, clipped to the range) or resamples their --sample (and --grid) fields. Writes lineage.csv, pbt.npz "
        "and hparams.png beside the sweep's results.")
    pbt.add_argument("--pbt", action="store_true", help="train the agents as a PBT population")
    pbt.add_argument("--pbt-interval", type=_positive_int, default=10, metavar="K",
                     help="updates between generations (default: 10)")
    pbt.add_argument("--pbt-fraction", type=_float, default=0.25, metavar="F",
                     help="bottom fraction replaced by copies of the top fraction, 0 to 0.5 (default: 0.25)")
    pbt.add_argument("--pbt-resample-prob", type=_float, default=0.25, metavar="P",
                     help="probability that a copied agent's field is drawn afresh instead of perturbed (default: 0.25)")
    hosts = sweep.add_argument_group(
        "several processes / hosts (jax.distributed)",
        "On a SLURM, Open MPI, Kubernetes or Cloud TPU cluster JAX finds the processes itself; elsewhere give "
        "all three of --coordinator, --num-processes and --process-id. Every process runs the same sweep (checked) "
        "and only process 0 writes results.")
    hosts.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                       help="address of process 0 (default: JAX's own $JAX_COORDINATOR_ADDRESS, or the cluster's)")
    hosts.add_argument("--num-processes", type=_positive_int, default=None, metavar="N",
                       help="number of processes (default: the cluster's)")
    hosts.add_argument("--process-id", type=_positive_int, default=None, metavar="I",
                       help="this process, 0 to N-1 (default: the cluster's)")
    hosts.add_argument("--coordinator-timeout", type=_positive_int, default=60, metavar="S",
                       help="seconds to wait for all processes to join (default: 60)")
    add_config_flags(sweep)


def _add_eval(sub) -> None:
    """``purejaxppo eval``."""
    ev = sub.add_parser(
        "eval",
        help="evaluate a trained run from its checkpoint",
        description="Run episodes of a trained policy in one compiled program and write eval.json in the run folder.",
    )
    ev.add_argument("--run", required=True, metavar="DIR",
                    help="the run folder (the --out of purejaxppo train), or a sweep's folder with --agent")
    ev.add_argument("--agent", type=_positive_int, default=None, metavar="I",
                    help="evaluate agent I of the sweep in --run (the agent column of its results.csv); writes "
                    "evals/agentI.json there")
    ev.add_argument("--step", type=_positive_int, default=None, metavar="UPDATE",
                    help="the checkpoint to load, by update number (default: the latest)")
    ev.add_argument("--episodes", type=_positive_int, default=10, metavar="N", help="episodes to run (default: 10)")
    ev.add_argument("--deterministic", action="store_true", help="act with the mode of the policy instead of sampling")
    ev.add_argument("--seed", type=_positive_int, default=0, metavar="N", help="seed of the evaluation (default: 0)")
    ev.add_argument("--render", default=None, metavar="OUT.gif",
                    help="also record one episode as an animated GIF (CartPole, Acrobot, Pendulum, MountainCar, MinAtar)")
    add_cache_flag(ev)


def _add_reproduce(sub) -> None:
    """``purejaxppo reproduce``."""
    rep = sub.add_parser(
        "reproduce",
        help="run a reproduction suite against published numbers",
        description="Train every task of a suite with its preset (seeds vmapped in one program per task), evaluate "
                    "the final policies and write results.csv, summary.md and plots to --out.",
    )
    rep.add_argument("suite", nargs="?", default=None, metavar="SUITE",
                     help="gymnax-classic, bsuite, minatar, craftax or ppo-paper (omit with --list)")
    rep.add_argument("--list", action="store_true", help="list the suites, their tasks and published numbers")
    rep.add_argument("--seeds", type=_positive_int, default=None, metavar="N",
                     help="seeds per task (default: 5; ppo-paper: 3)")
    rep.add_argument("--task", action="append", default=None, metavar="ENV", help="run only this task (repeatable)")
    rep.add_argument("--tiny", action="store_true",
                     help="2 updates of 4 envs per task: checks the plumbing, not the numbers")
    rep.add_argument("--out", default=None, metavar="DIR", help="where the result files go (default: results/SUITE; with --tiny a new "
                     "runs/reproduce_SUITE_tiny_TIME, never the committed results)")
    rep.add_argument("--overwrite", action="store_true", help="replace the results already in --out")
    rep.add_argument("--steps", type=_positive_int, default=None, metavar="N",
                     help="env steps per task, labelled as a smaller protocol (default: the suite's; ppo-paper: "
                     "the paper's 1,000,000)")
    rep.add_argument("--backend", default=None, metavar="NAME",
                     help="ppo-paper: Brax physics backend of the tasks (default: mjx); a --task named TASK-BACKEND "
                     "picks its own")
    add_cache_flag(rep)




def cmd_reproduce(args: argparse.Namespace) -> int:
    from purejaxppo.run.reproduce import RESULT_FILES, SUITES, get_suite, run_suite

    if args.list:
        for suite in [get_suite(args.suite)] if args.suite else SUITES.values():
            where = "" if suite.fits_cpu else " (sized for an accelerator)"
            print(f"{suite.name}{where}: " + ", ".join(f"{t.env} {t.published:g}" for t in suite.tasks))
        if not args.suite:
            print("ppo-paper (sized for an accelerator): Table 1's 11 surrogate objectives and TRPO on 7 Brax tasks")
        return 0
    if args.suite is None:
        raise ConfigError(f"reproduce: name a suite ({', '.join(SUITES)}, ppo-paper) or give --list")
    if args.suite == "ppo-paper":
        return _reproduce_ppo_paper(args)
    get_suite(args.suite)
    args.seeds = 5 if args.seeds is None else args.seeds
    if args.seeds < 1:
        raise ConfigError(f"reproduce --seeds: must be at least 1, got {args.seeds}")
    from purejaxppo.run.layout import check_out_path

    _setup_cache(args)
    out = args.out or _reproduce_out(args.suite, args.tiny)
    check_out_path(out)
    held = [name for name in RESULT_FILES if os.path.exists(os.path.join(out, name))]
    if held and not args.overwrite:
        raise UsageError(f"{out} already holds a suite's results ({', '.join(held)}); pass --overwrite to replace "
                         "them, or --out DIR to write elsewhere")
    command = "purejaxppo reproduce " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["reproduce"] else [args.suite])
    summary = run_suite(args.suite, seeds=args.seeds, tiny=args.tiny, out=out, tasks=args.task, command=command,
                        log=lambda m: print(m, flush=True), steps=args.steps)
    print(f"IQM {summary['iqm']:.3f} [{summary['iqm_ci95'][0]:.3f}, {summary['iqm_ci95'][1]:.3f}]; "
          f"results in {out} (summary.md)")
    return 0


def _reproduce_out(suite: str, tiny: bool) -> str:
    """Where a reproduction writes without --out: the committed results folder, or, for a --tiny
    run (plumbing numbers), a fresh scratch folder under runs/ that never replaces results."""
    if tiny:
        return os.path.join("runs", f"reproduce_{suite}_tiny_{time.strftime('%Y%m%d-%H%M%S')}")
    return os.path.join("results", suite)


def _reproduce_ppo_paper(args: argparse.Namespace) -> int:
    """``purejaxppo reproduce ppo-paper``: Table 1 and Figure 3 of the PPO paper (purejaxppo/run/ppo_paper.py)."""
    from purejaxppo.run import ppo_paper
    from purejaxppo.run.layout import check_out_path

    _setup_cache(args)
    out = args.out or _reproduce_out("ppo-paper", args.tiny)
    check_out_path(out)
    held = [name for name in ppo_paper.RESULT_FILES if os.path.exists(os.path.join(out, name))]
    if held and not args.overwrite:
        raise UsageError(f"{out} already holds a suite's results ({', '.join(held)}); pass --overwrite to replace "
                         "them, or --out DIR to write elsewhere")
    command = "purejaxppo reproduce " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["reproduce"] else [args.suite])
    summary = ppo_paper.run_paper(args.task, steps=args.steps or ppo_paper.FULL_STEPS,
                                  seeds=ppo_paper.FULL_SEEDS if args.seeds is None else args.seeds,
                                  backend=args.backend or ppo_paper.DEFAULT_BACKEND, is_tiny=args.tiny, out=out,
                                  command=command, log=lambda m: print(m, flush=True))
    for row in summary["rows"]:
        print(f"{row['setting']}: {row['ours']:.2f} (published {row['published']})")
    print(f"results in {out} (summary.md, figure3.png)")
    return 0




def _add_run_flags(parser: argparse.ArgumentParser, default_out: str) -> None:
    from purejaxppo.core.presets import preset_names

    parser.add_argument(
        "--preset",
        default=None,
        help=f"start from a tuned preset: {preset_names()}, or 'none' for the plain defaults "
        "(default: the preset of --env when it has one)",
    )
    parser.add_argument("--out", default=None, metavar="DIR", help=f"output folder (default: {default_out})")
    parser.add_argument("--overwrite", action="store_true", help="replace the results already in --out")
    parser.add_argument("--brax-backend", default=None, metavar="NAME",
                        help="physics backend of a Brax environment (--env brax/<task>): generalized, positional, "
                        "spring or mjx (default: mjx, MuJoCo's own physics; the same as --env brax/<task>-<backend>)")




def _add_long_run_flags(parser: argparse.ArgumentParser) -> None:
    from purejaxppo.core.config import SAFE_RESUME_FIELDS

    g = parser.add_argument_group("run management")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its latest usable checkpoint, with its saved settings "
                   "(the training settings and, unless given again, the run-management ones below)")
    g.add_argument("--allow-safe-changes", action="store_true",
                   help=f"with --resume, accept changes to {', '.join(SAFE_RESUME_FIELDS)}")
    g.add_argument("--chunk-updates", type=_positive_int, default=None, metavar="K",
                   help="updates per compiled chunk; metrics, progress and checkpoints happen between chunks "
                   "(default: about 1/20 of the run)")
    g.add_argument("--checkpoint-every", type=_positive_int, default=None, metavar="M",
                   help="save a checkpoint at each multiple of M updates (at the end of its chunk) and at the end; "
                   "0 for none (default: every 5 minutes of training, and at the end)")
    g.add_argument("--keep-checkpoints", type=_positive_int, default=None, metavar="N",
                   help="how many of the latest checkpoints to keep (default: 3)")
    g.add_argument("--data-parallel", action="store_true",
                   help="train one agent with its environments split over all local devices and the gradients "
                   "averaged (num-envs and the minibatch size must divide by the device count)")
    g.add_argument("--stop-at-return", type=float, default=None, metavar="R",
                   help="end the run once its final return (mean return over the last 10%% of the updates so far) "
                   "is at least R (checked between chunks; saved for --resume)")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: only on a terminal)")
    g.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=None,
                   help="also write TensorBoard event files to OUT/tensorboard (extra: purejaxppo[tensorboard]); "
                   "--no-tensorboard turns it off on --resume of a run that had it")
    g.add_argument("--wandb", action=argparse.BooleanOptionalAction, default=None,
                   help="also log to Weights & Biases (extra: purejaxppo[wandb]); --no-wandb turns it off on "
                   "--resume of a run that had it")
    g.add_argument("--wandb-project", default="purejaxppo", metavar="NAME", help="W&B project (default: purejaxppo)")
    g.add_argument("--wandb-mode", default="offline", choices=("offline", "online"),
                   help="offline writes under OUT/wandb and needs no account (default: offline)")
    add_cache_flag(parser)


def _explicit_overrides(args: argparse.Namespace) -> dict[str, Any]:
    from purejaxppo.core.config import PPOConfig

    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(PPOConfig) if hasattr(args, f.name)}
    for name, value in overrides.items():
        if isinstance(value, list):
            overrides[name] = tuple(value)
    return overrides


def resolve_config(args: argparse.Namespace) -> tuple[PPOConfig, str | None]:
    """Defaults <- preset <- explicit flags (checked where the trainer is built)."""
    from purejaxppo.core.config import PPOConfig
    from purejaxppo.core.presets import preset, preset_name_for

    overrides = _explicit_overrides(args)
    preset_name = args.preset
    if preset_name is None:
        preset_name = preset_name_for(overrides.get("env", PPOConfig().env))
    elif preset_name.lower() == "none":
        preset_name = None
    base = preset(preset_name) if preset_name else PPOConfig()
    config = base.replace(**overrides)
    if getattr(args, "brax_backend", None):
        from purejaxppo.envs.brax_envs import with_backend

        config = config.replace(env=with_backend(config.env, args.brax_backend, strict=True))
    return config, preset_name


def resolve_resume(args: argparse.Namespace, out: str):
    """The run's saved settings <- preset (if given) <- explicit flags, as a built trainer and the
    run's preset name; refuses changes other than SAFE_RESUME_FIELDS (and those without
    --allow-safe-changes)."""
    from purejaxppo.core.config import SAFE_RESUME_FIELDS, PPOConfig
    from purejaxppo.core.presets import preset
    from purejaxppo.errors import ResumeRefused
    from purejaxppo.run.compiled import build_trainer
    from purejaxppo.run.layout import read_config, read_run_settings
    from purejaxppo.run.runner import check_resumable

    try:
        saved = read_config(out)
        run_settings = read_run_settings(out)
    except CheckpointError as e:
        raise UsageError(f"--resume: {e}") from None
    plain = bool(args.preset) and args.preset.lower() == "none"  # --preset none: the plain defaults
    preset_name = args.preset if args.preset and not plain else None
    base = preset(preset_name) if preset_name else PPOConfig() if plain else saved
    trainer = build_trainer(base.replace(**_explicit_overrides(args)),
                            args.data_parallel or bool(run_settings.get("data_parallel")))
    try:
        check_resumable(saved, trainer.config, allow_safe_changes=args.allow_safe_changes)
    except ResumeRefused as e:
        listed = ", ".join(f"{c} (run: {run}, now: {now})" for c, (run, now) in e.changes.items())
        how = (f"drop the flags that change {', '.join(e.unsafe)}" if e.unsafe else "pass --allow-safe-changes")
        if e.unsafe and args.preset:  # the preset's settings differ, not (only) the flags
            how = f"drop --preset {args.preset} (a resumed run starts from its saved settings) and the flags that " \
                  f"change {', '.join(e.unsafe)}"
        raise UsageError(
            f"--resume: the settings differ from the run's: {listed}; {how} "
            f"(only {', '.join(SAFE_RESUME_FIELDS)} may change on resume)"
        ) from None
    return trainer, None if plain else preset_name or run_settings.get("preset")


def _check_flags(args: argparse.Namespace) -> None:
    from purejaxppo.run.options import MINIMUM, check_option

    for name in ("chunk_updates", "checkpoint_every", "keep_checkpoints", "stop_at_return"):
        value = getattr(args, name, None)
        try:
            check_option(name, value)
        except ConfigError:
            if name in MINIMUM:
                raise UsageError(f"{_flag(name)}: {value} is out of range; accepted: an integer >= {MINIMUM[name]}") \
                    from None
            raise UsageError(f"{_flag(name)}: {value} is not a finite number; accepted: a return, e.g. 475") from None
    if args.resume and not args.out:
        raise UsageError("--resume: needs --out DIR, the folder of the run to continue")
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite contradict each other; accepted: one of them")
    if args.allow_safe_changes and not args.resume:
        raise UsageError("--allow-safe-changes: only applies with --resume")
    if getattr(args, "agent", None) is not None and getattr(args, "init_from", None) is None:
        raise UsageError("--agent: only applies with --init-from SWEEP")
    if getattr(args, "init_from", None) is not None and args.resume:
        raise UsageError("--init-from and --resume contradict each other: a resumed run continues from its own "
                         "checkpoint (and its saved --init-from); accepted: one of them")


def cmd_train(args: argparse.Namespace) -> int:
    from purejaxppo.run import layout
    from purejaxppo.run.compiled import build_trainer
    from purejaxppo.run.runner import run

    _check_flags(args)
    from purejaxppo.run.loggers import check_extras

    check_extras(bool(args.tensorboard), bool(args.wandb))  # before anything is made (a saved one: in run())
    if args.resume:
        out = args.out
        trainer, preset_name = resolve_resume(args, out)
    else:
        config, preset_name = _agent_config(args) if args.init_from is not None else resolve_config(args)
        trainer = build_trainer(config, args.data_parallel)  # validates the settings
        if args.init_from is not None:  # the agent's state fits this run's, checked before --out is made
            from purejaxppo.run.compiled import init_shapes, make_programs
            from purejaxppo.run.sweep_agents import check_fits, load_agent

            check_fits(init_shapes(trainer, make_programs(trainer, None)), load_agent(args.init_from, args.agent)[3])
        out = args.out if args.out is not None else os.path.join(
            "runs", f"{config.env.replace('/', '_')}_s{config.seed}_{time.strftime('%Y%m%d-%H%M%S')}")
        layout.check_out_dir(out, args.overwrite)  # checked again under the folder's lock
    cache = _setup_cache(args)
    print(f"preset: {preset_name or 'none'}", flush=True)
    run(
        trainer,
        out_dir=out,
        preset_name=preset_name,
        log=lambda m: print(m, flush=True),
        chunk_updates=args.chunk_updates,
        checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=args.progress,
        tensorboard=args.tensorboard,
        wandb={"project": args.wandb_project, "mode": args.wandb_mode} if args.wandb else args.wandb,
        stop_at_return=args.stop_at_return,
        program_cache=_programs_folder(cache),
        init_from=(args.init_from, args.agent) if args.init_from is not None else None,
    )
    return 0


def _agent_config(args: argparse.Namespace) -> tuple[PPOConfig, str | None]:
    """``train --init-from SWEEP --agent I``: the agent's settings (the sweep's, with the agent's final
    hyperparameters) <- explicit flags, and the sweep's preset name."""
    from purejaxppo.run.layout import read_sweep
    from purejaxppo.run.sweep_agents import load_agent

    if args.agent is None:
        raise UsageError("--init-from: needs --agent I, the agent of the sweep to start from")
    if args.preset:
        raise UsageError("--init-from: the run starts from the agent's settings; drop --preset (flags given still "
                         "change single settings)")
    try:
        preset_name = read_sweep(args.init_from)[1].get("preset")
        config = load_agent(args.init_from, args.agent)[0]
    except CheckpointError as e:
        raise UsageError(f"--init-from: {e}") from None
    except ConfigError as e:
        raise UsageError(f"--agent: {e}") from None
    return config.replace(**_explicit_overrides(args)), preset_name


def _setup_cache(args: argparse.Namespace) -> str | None:
    """Turn on the compilation cache chosen by the flag / environment; its folder (None: off)."""
    from purejaxppo.run.cache import enable_compilation_cache

    return enable_compilation_cache(args.compilation_cache)


def _programs_folder(cache: str | None) -> str | None:
    """The folder of saved traced programs inside the compilation cache ``cache`` (None: off)."""
    from purejaxppo.run.programs import FOLDER

    return os.path.join(cache, FOLDER) if cache is not None else None


def cmd_eval(args: argparse.Namespace) -> int:
    from purejaxppo.run.evaluate import evaluate_run

    if args.episodes < 1:
        raise UsageError(f"--episodes: {args.episodes} is out of range; accepted: an integer >= 1")
    if not 0 <= args.seed < 2**63:
        raise UsageError(f"--seed: {args.seed} is out of range; accepted: an integer from 0 to 2**63 - 1")
    cache = _setup_cache(args)
    evaluate_run(args.run, args.episodes, args.deterministic, args.seed, args.step, args.render,
                 log=lambda m: print(m, flush=True), program_cache=_programs_folder(cache), agent=args.agent)
    return 0


def _pbt_settings(args: argparse.Namespace, grid: dict, samples: dict):
    """``(PBTConfig, search space)`` of ``--pbt`` (``(None, None)`` without it); PBT flags without it are refused."""
    from purejaxppo.scale.pbt import PBTConfig, space_of

    if not args.pbt:
        flags = (("--pbt-interval", args.pbt_interval, 10), ("--pbt-fraction", args.pbt_fraction, 0.25),
                 ("--pbt-resample-prob", args.pbt_resample_prob, 0.25))
        given = [flag for flag, value, default in flags if value != default]
        if given:
            raise UsageError(f"{given[0]}: given without --pbt; accepted: with --pbt")
        return None, None
    return PBTConfig(args.pbt_interval, args.pbt_fraction, args.pbt_resample_prob), space_of(grid, samples)


def cmd_sweep(args: argparse.Namespace) -> int:
    from purejaxppo.scale import distributed

    # Joining the other processes comes before anything starts a JAX backend (importing gymnax does).
    processes = distributed.resolve(args.coordinator, args.num_processes, args.process_id)
    if processes is not None:
        if args.coordinator_timeout < 1:
            raise UsageError(f"--coordinator-timeout: {args.coordinator_timeout}; accepted: an integer >= 1")
        distributed.initialize(processes, timeout=args.coordinator_timeout, prefix=f"{PROG} sweep: error: ")
    from purejaxppo.core.train import make_trainer
    from purejaxppo.run import layout
    from purejaxppo.run.sweeps import check_agents_fit, launch_sweep
    from purejaxppo.scale import plan as sweep_plan

    if args.resume or args.allow_safe_changes:
        return _resume_sweep(args, processes)
    grid, samples = sweep_plan.parse_specs(args.grid, args.sample)
    if samples and args.num_samples <= 0:
        raise UsageError("--num-samples: random search with --sample needs --num-samples K (K > 0)")
    if args.num_samples and not samples:
        raise UsageError("--num-samples: given without any --sample FIELD=DIST to draw from")
    pbt, space = _pbt_settings(args, grid, samples)
    config, preset_name = resolve_config(args)
    trainer = make_trainer(config)  # validates the settings
    check_agents_fit(trainer, args.num_seeds, grid, args.num_samples)  # before the plan draws their keys
    plan = sweep_plan.make_plan(config, args.num_seeds, grid, samples, args.num_samples)
    if pbt is not None:
        from purejaxppo.scale.pbt import check_pbt

        check_pbt(pbt, space, plan.num_agents)
    out = args.out if args.out is not None else os.path.join(
        "runs", f"sweep_{config.env.replace('/', '_')}_{time.strftime('%Y%m%d-%H%M%S')}")
    layout.check_out_dir(out, args.overwrite, "sweep")
    cache = _setup_cache(args)  # a refused cache folder leaves no --out behind
    if processes is not None:  # before training: every process runs this same sweep, or all stop here
        distributed.check_same_sweep(config, plan, processes, pbt)
    spec = {"num_seeds": args.num_seeds, "grid": grid, "sample": {k: [v.kind, *v.values] for k, v in samples.items()},
            "num_samples": args.num_samples, "preset": preset_name}
    if pbt is not None:
        spec["pbt"] = pbt._asdict()
    launch_sweep(trainer, plan, out, spec, overwrite=args.overwrite, progress=args.progress,
                 program_cache=_programs_folder(cache), log=lambda m: print(m, flush=True), pbt=pbt, space=space)
    return 0


def _resume_sweep(args: argparse.Namespace, processes) -> int:
    """``sweep --resume --out DIR``: the sweep's saved plan and settings (a larger ``--total-timesteps``
    with ``--allow-safe-changes``), continued from its last checkpoint."""
    from purejaxppo.core.train import make_trainer
    from purejaxppo.errors import ResumeRefused
    from purejaxppo.run.layout import read_sweep
    from purejaxppo.run.runner import check_resumable
    from purejaxppo.run.sweeps import launch_sweep
    from purejaxppo.scale import plan as sweep_plan
    from purejaxppo.scale.pbt import PBTConfig, space_of

    if not args.resume:
        raise UsageError("--allow-safe-changes: only applies with --resume")
    if not args.out or args.overwrite:
        raise UsageError("--resume: needs --out DIR, the folder of the sweep to continue, and no --overwrite")
    if processes is not None:
        raise UsageError("--resume: a sweep over several processes keeps no checkpoints; accepted: a sweep run in "
                         "one process")
    given = [flag for flag, on in (("--grid", args.grid), ("--sample", args.sample), ("--num-samples", args.num_samples),
                                   ("--num-seeds", args.num_seeds != 1), ("--pbt", args.pbt), ("--preset", args.preset))
             if on]
    if given:
        raise UsageError(f"--resume: the sweep continues with its saved plan; drop {', '.join(given)}")
    try:
        saved, spec = read_sweep(args.out)
    except CheckpointError as e:
        raise UsageError(f"--resume: {e}") from None
    try:
        config = saved.replace(**_explicit_overrides(args))
        check_resumable(saved, config, allow_safe_changes=args.allow_safe_changes)
    except ResumeRefused as e:
        how = "drop the flags that change " + ", ".join(e.unsafe) if e.unsafe else "pass --allow-safe-changes"
        raise UsageError(f"--resume: {e}; {how}") from None
    samples = {f: sweep_plan.Distribution(v[0], tuple(v[1:])) for f, v in spec.get("sample", {}).items()}
    grid = spec.get("grid", {})
    plan = sweep_plan.make_plan(config, spec["num_seeds"], grid, samples, spec.get("num_samples", 0))
    pbt = PBTConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec["pbt"].items()}) \
        if spec.get("pbt") else None
    cache = _setup_cache(args)
    launch_sweep(make_trainer(config), plan, args.out, {k: v for k, v in spec.items() if k != "seconds"},
                 overwrite=False, progress=args.progress, program_cache=_programs_folder(cache),
                 log=lambda m: print(m, flush=True), pbt=pbt, space=space_of(grid, samples) if pbt else None,
                 resume=True)
    return 0


@contextlib.contextmanager
def _removed_if_left_empty(out: str | None):
    """A command that fails leaves no --out folder it made and wrote nothing in (a refused flag
    found after the folder was made, a missing extra)."""
    from purejaxppo.run.layout import LOCK

    made = bool(out) and not os.path.lexists(out)
    try:
        yield
    except BaseException:
        with contextlib.suppress(OSError):
            if made and os.path.isdir(out) and set(os.listdir(out)) <= {LOCK}:
                shutil.rmtree(out)
        raise


def main(argv: list[str] | None = None) -> int:
    from purejaxppo.run import quiet
    from purejaxppo.run.signals import ExitOnSignal

    quiet.install()  # the command reports each failure in one line: the libraries' logs of it are dropped
    # Until a run installs its own handlers (which stop it at a consistent point), a signal ends
    # the command at once: nothing is being written yet.
    with ExitOnSignal(f"{PROG}: interrupted\n"):
        return _main(argv)


def _main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and not argv[0].startswith("-") else None
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:
            target = parser.subcommands.get(args.command, parser)  # type: ignore[attr-defined]
            target.unknown_error(extra)
        commands = {"train": cmd_train, "sweep": cmd_sweep, "eval": cmd_eval, "reproduce": cmd_reproduce,
                    "rlhf": cmd_rlhf}
        if args.command in commands:
            with _removed_if_left_empty(getattr(args, "out", None)):
                return commands[args.command](args)
        if args.command == "envs":
            from purejaxppo.envs import describe_envs

            print(describe_envs())
            return 0
        if args.command == "presets":
            from purejaxppo.core.presets import PRESETS

            for name, settings in PRESETS.items():
                print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in settings.items() if k != "env"))
            return 0
        parser.print_help()
        return 2
    except PurejaxppoError as e:
        where = f"{PROG} {command}" if command else PROG
        # a stop the user asked for (Ctrl-C, SIGTERM) is not an error: its line says what was kept
        print(f"{where}: {e}" if isinstance(e, Interrupted) else f"{where}: error: {e}", file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (``purejaxppo envs | head``): stop quietly. Point stdout at
        # /dev/null so that Python's final flush does not fail again on the closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:  # any other failed read or write (a full disk) is one line, whichever wrote
        where = f"{PROG} {command}" if command else PROG
        what = f"{e.filename}: " if e.filename else ""
        print(f"{where}: error: {what}{e.strerror or e}; accepted: a folder with space you can write to",
              file=sys.stderr)
        return 1


def entry() -> NoReturn:
    """The ``purejaxppo`` command: :func:`main`, then the process ends without tearing the
    interpreter down. Freeing every module and every XLA object of a run takes about half a
    second, for nothing: the exit handlers still run and the other threads are waited for, as
    at a normal exit. Under a profiler or a tracer (which write their results after the
    program), and when ``main`` raises, the exit is the usual one."""
    code = main()
    if sys.getprofile() is not None or sys.gettrace() is not None:
        sys.exit(code)
    for thread in threading.enumerate():
        # A failed command has reported its failure: a library's thread left waiting by it (Orbax's
        # metadata store after a write failed on a full disk) is not waited for; it would be forever.
        if code == 0 and thread is not threading.main_thread() and not thread.daemon:
            # Orbax's threads re-raise their failure in join(); the command has reported it already
            with contextlib.suppress(Exception):
                thread.join()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
