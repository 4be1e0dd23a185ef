"""The ``purejaxppo`` command line: the only place that parses arguments.

Every :class:`~purejaxppo.config.PPOConfig` field is a flag named after the field in
kebab case (``num_envs`` -> ``--num-envs``), documented by the field's docstring.
Settings are resolved in this order: defaults, then the preset (by default the preset
of ``--env`` when one exists), then the flags given.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import sys
import time
from typing import Any, NoReturn

from purejaxppo.config import ACTIVATIONS, KL_PENALTIES, PRESETS, ConfigError, PPOConfig, field_docs, preset, validate

PROG = "purejaxppo"


class UsageError(Exception):
    """A user mistake on the command line; printed as one line, exit status 2."""


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


def _parse_bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean {text!r}; accepted: true or false")


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
    docs = field_docs()
    group = parser.add_argument_group("training settings (PPOConfig fields)")
    for f in dataclasses.fields(PPOConfig):
        kind = str(f.type)
        help_text = docs.get(f.name, "")
        default = f.default
        kw: dict[str, Any] = dict(dest=f.name, default=argparse.SUPPRESS)
        if kind == "bool":
            group.add_argument(
                _flag(f.name),
                action=argparse.BooleanOptionalAction,
                help=f"{help_text} (default: {default})",
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
            kw["metavar"] = {"activation": "|".join(ACTIVATIONS), "kl_penalty": "|".join(KL_PENALTIES)}.get(
                f.name, "NAME"
            )
        shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
        group.add_argument(_flag(f.name), help=f"{help_text} (default: {shown})", **kw)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="PPO compiled end to end in JAX.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    parser.subcommands = sub.choices  # type: ignore[attr-defined]
    train = sub.add_parser("train", help="train one agent and write its results", description="Train one PPO agent.")
    train.add_argument(
        "--preset",
        default=None,
        help=f"start from a tuned preset: {', '.join(PRESETS)}, or 'none' for the plain defaults "
        "(default: the preset of --env when it has one)",
    )
    train.add_argument("--out", default=None, metavar="DIR", help="output folder (default: runs/ENV_sSEED_TIME)")
    train.add_argument("--overwrite", action="store_true", help="replace the results already in --out")
    add_config_flags(train)
    sub.add_parser("envs", help="list the environment names accepted by --env")
    sub.add_parser("presets", help="list the presets and their settings")
    return parser


def resolve_config(args: argparse.Namespace) -> tuple[PPOConfig, str | None]:
    """Defaults <- preset <- explicit flags."""
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(PPOConfig) if hasattr(args, f.name)}
    for name, value in overrides.items():
        if isinstance(value, list):
            overrides[name] = tuple(value)
    preset_name = args.preset
    if preset_name is None:
        env = overrides.get("env", PPOConfig().env)
        preset_name = env if env in PRESETS else None
    elif preset_name.lower() == "none":
        preset_name = None
    base = preset(preset_name) if preset_name else PPOConfig()
    config = base.replace(**overrides)
    return validate(config), preset_name


def _check_out_dir(out: str, overwrite: bool) -> None:
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out: {out} exists and is not a folder; accepted: a new or empty folder")
    existing = [f for f in ("config.json", "metrics.csv", "summary.json") if os.path.exists(os.path.join(out, f))]
    if existing and not overwrite:
        raise UsageError(
            f"--out: {out} already holds a run ({', '.join(existing)}); pass --overwrite to replace it "
            "or choose another folder"
        )


def cmd_train(args: argparse.Namespace) -> int:
    config, preset_name = resolve_config(args)
    out = args.out or os.path.join("runs", f"{config.env}_s{config.seed}_{time.strftime('%Y%m%d-%H%M%S')}")
    _check_out_dir(out, args.overwrite)
    from purejaxppo.runner import run

    print(f"preset: {preset_name or 'none'}", flush=True)
    run(config, out_dir=out, preset_name=preset_name, log=lambda m: print(m, flush=True))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and not argv[0].startswith("-") else None
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:
            target = parser.subcommands.get(args.command, parser)  # type: ignore[attr-defined]
            target.unknown_error(extra)
        if args.command == "train":
            return cmd_train(args)
        if args.command == "envs":
            from purejaxppo.envs import known_envs

            print("\n".join(known_envs()))
            return 0
        if args.command == "presets":
            for name, settings in PRESETS.items():
                print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in settings.items() if k != "env"))
            return 0
        parser.print_help()
        return 2
    except (UsageError, ConfigError) as e:
        where = f"{PROG} {command}" if command else PROG
        print(f"{where}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
