"""``purejaxppo rlhf``: its flags and what it runs (the command line's part of the RLHF study)."""

from __future__ import annotations

import argparse
import sys

from purejaxppo.errors import ConfigError
from purejaxppo.run.cache import add_cache_flag, enable_compilation_cache


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None


def add_rlhf(sub) -> None:
    """``purejaxppo rlhf``."""
    rl = sub.add_parser(
        "rlhf",
        help="align a small language model with PPO, DPO and best-of-n on a task with a known truth",
        description="The RLHF study on a synthetic preference task where every quantity is computed exactly: "
        "SFT reference, Bradley-Terry reward model, PPO with a KL penalty (adaptive, fixed, beta ~ 0), DPO, "
        "best-of-n, GRPO, RLOO and reward-model ensembles. Writes results.csv, summary.md, plots and Orbax checkpoints of each stage to --out.",
    )
    rl.add_argument("stage", choices=("demo", "sft", "reward", "ppo", "dpo", "bon", "grpo", "rloo", "ensemble"),
                    metavar="STAGE", help="demo (every stage), or one of sft, reward, ppo, dpo, bon, grpo, rloo, "
                    "ensemble (reads the earlier stages in --out)")
    rl.add_argument("--out", required=True, metavar="DIR", help="the study's folder")
    rl.add_argument("--overwrite", action="store_true",
                    help="replace a study already in --out (demo), or the stage records a stage's run replaces")
    rl.add_argument("--tiny", action="store_true", help="small budgets and 5-token responses (about 2 minutes)")
    rl.add_argument("--seed", type=_integer, default=None, metavar="N", help="training seed (default: 0)")
    rl.add_argument("--task-seed", type=_integer, default=None, metavar="N",
                    help="seed of the task: G, the gold reward (default: 0)")
    rl.add_argument("--length", type=_integer, default=None, metavar="L",
                    help="response tokens (default: 6; 5 with --tiny)")
    rl.add_argument("--prompts", type=_integer, default=None, metavar="P", help="prompt values (default: 4)")
    rl.add_argument("--kl-target", type=float, default=None, metavar="NATS",
                    help="the adaptive controller's KL target per response (default: 1.0)")
    rl.add_argument("--iterations", type=_integer, default=None, metavar="N",
                    help="PPO, GRPO and RLOO iterations, a multiple of 10 (default: 150; 40 with --tiny)")
    rl.add_argument("--task-seeds", type=_integer, default=None, metavar="N",
                    help="demo only: the whole study on N task seeds (from --task-seed, default 0), each in "
                    "OUT/task-seed-S, then seeds.md and seeds.json in OUT: gold at matched KL with intervals over "
                    "the seeds, each check's pass rate, over-optimisation and the trap")
    add_cache_flag(rl)


def cmd_rlhf(args: argparse.Namespace) -> int:
    from purejaxppo.rlhf import pipeline
    from purejaxppo.run.layout import check_out_path

    for flag, value in (("--seed", args.seed), ("--task-seed", args.task_seed)):
        if value is not None and not 0 <= value < 2**63:  # as train's --seed; checked before anything is written
            raise ConfigError(f"rlhf {flag}: got {value}; accepted: an integer from 0 to 2**63 - 1")
    if args.kl_target is not None and not args.kl_target > 0:
        raise ConfigError(f"rlhf --kl-target: must be a positive number of nats, got {args.kl_target}")
    if args.task_seeds is not None and (args.stage != "demo" or args.task_seeds < 1):
        raise ConfigError(f"rlhf --task-seeds: got {args.task_seeds} with stage {args.stage}; accepted: an integer "
                          ">= 1, with the demo stage")
    enable_compilation_cache(args.compilation_cache)  # a refused cache folder leaves no --out behind
    # A single stage starts from the study's saved settings (flags given change them).
    settings = pipeline.study_settings(args.out, args.stage, args.tiny, seed=args.seed, task_seed=args.task_seed,
                                       length=args.length, prompts=args.prompts, kl_target=args.kl_target,
                                       iterations=args.iterations)
    pipeline.check_settings(settings)  # before --out is made
    check_out_path(args.out)
    stages = pipeline.STAGES if args.stage == "demo" else (args.stage,)
    command = "purejaxppo " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["rlhf"] else None
    if args.task_seeds is not None:
        return _task_seeds(args, settings, command)
    pipeline.run_stages(args.out, settings, stages, log=lambda m: print(m, flush=True), command=command,
                        overwrite=args.overwrite, replace=args.stage == "demo", exit_on_signal=True)
    print(f"results in {args.out} (summary.md, results.csv, *.png)")
    return 0


def _task_seeds(args: argparse.Namespace, settings, command: str | None) -> int:
    """The demo on ``--task-seeds`` task seeds, each in its own study folder, then the comparison."""
    import os

    from purejaxppo.rlhf import pipeline, seeds

    first = settings.task.seed
    chosen = list(range(first, first + args.task_seeds))
    os.makedirs(args.out, exist_ok=True)
    for s in chosen:
        print(f"task seed {s} ...", flush=True)
        pipeline.run_stages(seeds.seed_folder(args.out, s), settings._replace(task=settings.task._replace(seed=s)),
                            pipeline.STAGES, log=lambda m: print(m, flush=True), command=command,
                            overwrite=args.overwrite, replace=True, exit_on_signal=True)
    note = f"Command: `{command}`" if command else ""
    seeds.write(args.out, chosen, note + (" (the --tiny budgets)" if args.tiny else ""))
    print(f"results in {args.out} (seeds.md, seeds.json; each seed's study in task-seed-S/)")
    return 0
