"""Launch to result: how long ``purejaxppo train`` takes from the command to its final line,
with a warm compilation cache, and where that time goes (start-up, compilation, training, writing).

Runs the same command in fresh processes, side by side, in these variants:

- ``now``: the command as shipped (``purejaxppo train``);
- ``programs traced each launch``: without the saved traced programs
  (:mod:`purejaxppo.run.programs`): the initial state's and the chunk's programs are traced and
  lowered at every launch, as JAX's compilation cache alone needs;
- ``imports after training, full exit``: Orbax and matplotlib imported when first used, after
  training, instead of in the background while it runs, and the interpreter torn down at exit;
- ``before these three``: both of the above, the command as it was before them;
- ``eager plotting imports``: the command as shipped after importing ``matplotlib.pyplot`` and
  ``seaborn`` first, as gymnax does when it is imported (what start-up cost before
  :mod:`purejaxppo.envs.deferred`).

    python experiments/benchmark_startup.py --repeats 3
    python experiments/benchmark_startup.py -- --env Acrobot-v1     # any train flags after --

``--eval N`` times ``purejaxppo eval --run DIR --episodes N`` instead, on a run trained once by
the train flags, in two variants: ``now``, and ``programs traced each launch`` (the initial
state traced for its shapes and the evaluation traced, at every launch).

    python experiments/benchmark_startup.py --eval 10 --repeats 3 -- --env brax/inverted_pendulum \
        --total-timesteps 20480 --num-envs 64 --num-steps 64

``--sweep`` times ``purejaxppo sweep`` with the flags after ``--`` in the same two variants
(the agents' initial states and the chunk of vmapped updates loaded, or traced at each launch):

    python experiments/benchmark_startup.py --sweep --repeats 3 -- --env brax/inverted_pendulum \
        --num-seeds 4 --total-timesteps 20480 --num-envs 64 --num-steps 64

The first launch of each variant warms the cache and is not counted; the table shows the median
of the timed launches. "solved" is CartPole's threshold: a final return >= 475.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

NOW = "from purejaxppo.cli import entry; entry()"
TRACED = ("import purejaxppo.run.programs as p; _init = p.Programs.__init__; "
          "p.Programs.__init__ = lambda self, folder, description=None: _init(self, None, description); ")
LATE = ("import sys, purejaxppo.run.runner as r; r._import_in_background = lambda *m: None; "
        "from purejaxppo.cli import main; sys.exit(main(sys.argv[1:]))")
VARIANTS = {
    "now": NOW,
    "programs traced each launch": TRACED + NOW,
    "imports after training, full exit": LATE,
    "before these three": TRACED + LATE,
    "eager plotting imports": "import matplotlib.pyplot, seaborn; " + NOW,
}


def timed(code: str, argv: list[str], env: dict[str, str], what: str) -> float:
    """Seconds from launching ``purejaxppo ARGV`` (through ``code``) to its exit; a failure stops the script."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, *argv], env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"the {what} failed: {done.stderr.strip().splitlines()[-1]}")
    return wall


def launch(code: str, args: list[str], out: str, env: dict[str, str]) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    wall = timed(code, ["train", *args, "--out", out], env, "run")
    summary = json.load(open(os.path.join(out, "summary.json")))
    compile_s, train_s = summary["compile_seconds"], summary["train_seconds"]
    return {"wall": wall, "compile": compile_s, "train": train_s, "rest": wall - compile_s - train_s,
            "final_return": summary["final_return"]}


def launch_eval(code: str, run: str, episodes: int, env: dict[str, str]) -> dict:
    wall = timed(code, ["eval", "--run", run, "--episodes", str(episodes)], env, "evaluation")
    return {"wall": wall, "mean_return": json.load(open(os.path.join(run, "eval.json")))["mean"]}


def launch_sweep(code: str, args: list[str], out: str, env: dict[str, str]) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    wall = timed(code, ["sweep", *args, "--out", out], env, "sweep")
    with open(os.path.join(out, "results.csv")) as f:
        finals = [float(row["final_return"]) for row in csv.DictReader(f)]
    return {"wall": wall, "mean_return": statistics.fmean(finals)}


def compare_launches(args: argparse.Namespace, work: str, title: str, one_launch) -> int:
    """``one_launch(code)`` timed in two variants, saved programs and traced ones, interleaved."""
    variants = {"now": NOW, "programs traced each launch": TRACED + NOW}
    records: dict[str, list[dict]] = {name: [] for name in variants}
    for code in variants.values():
        one_launch(code)  # warms the cache
    for _ in range(args.repeats):
        for name, code in variants.items():
            records[name].append(one_launch(code))
    print(f"{title} (warm compilation cache; median of {args.repeats})")
    print(f"{'variant':34s} {'launch to result':>16s} {'mean return':>12s}")
    for name, rs in records.items():
        print(f"{name:34s} {statistics.median(r['wall'] for r in rs):15.2f}s {rs[0]['mean_return']:12.2f}")
    ratio = (statistics.median(r["wall"] for r in records["programs traced each launch"])
             / statistics.median(r["wall"] for r in records["now"]))
    print(f"launch to result, programs traced each launch / now: {ratio:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": title, "records": records}, f, indent=2)
    shutil.rmtree(work, ignore_errors=True)
    return 0


def main_eval(args: argparse.Namespace, work: str, env: dict[str, str]) -> int:
    run = os.path.join(work, "run")
    launch(NOW, args.train_args, run, env)  # the run evaluated (its training saves the initial state's program)
    return compare_launches(
        args, work, f"purejaxppo eval --episodes {args.eval} of a run of purejaxppo train {' '.join(args.train_args)}",
        lambda code: launch_eval(code, run, args.eval, env))


def main_sweep(args: argparse.Namespace, work: str, env: dict[str, str]) -> int:
    out = os.path.join(work, "sweep")
    return compare_launches(args, work, f"purejaxppo sweep {' '.join(args.train_args)}",
                            lambda code: launch_sweep(code, args.train_args, out, env))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed launches per variant")
    parser.add_argument("--json", default=None, help="also write every figure to this file")
    parser.add_argument("--eval", type=int, default=0, metavar="N",
                        help="time purejaxppo eval (N episodes) of a run trained once, instead of train")
    parser.add_argument("--sweep", action="store_true",
                        help="time purejaxppo sweep with the flags after -- instead of train")
    parser.add_argument("train_args", nargs="*", help="flags for purejaxppo train (or sweep) (after --)")
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix="purejaxppo-startup-")
    env = dict(os.environ, PUREJAXPPO_COMPILATION_CACHE=os.path.join(work, "cache"))
    if args.eval and args.sweep:
        parser.error("--eval and --sweep: give one of them")
    if args.eval:
        return main_eval(args, work, env)
    if args.sweep:
        return main_sweep(args, work, env)
    records: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for name, code in VARIANTS.items():
        launch(code, args.train_args, os.path.join(work, "run"), env)  # warms the cache
    for _ in range(args.repeats):  # interleaved, so that both variants see the same machine
        for name, code in VARIANTS.items():
            records[name].append(launch(code, args.train_args, os.path.join(work, "run"), env))
    print(f"purejaxppo train {' '.join(args.train_args)} (warm compilation cache; median of {args.repeats})")
    print(f"{'variant':34s} {'launch to result':>16s} {'start-up+writing':>16s} {'compile':>8s} {'train':>7s} "
          f"{'final return':>12s}")
    for name, rs in records.items():
        med = {k: statistics.median(r[k] for r in rs) for k in ("wall", "rest", "compile", "train")}
        finals = [r["final_return"] for r in rs if r["final_return"] is not None]  # None: no episode ended
        final = f"{min(finals):12.1f}" if finals else f"{'none ended':>12s}"
        print(f"{name:34s} {med['wall']:15.2f}s {med['rest']:15.2f}s {med['compile']:7.2f}s {med['train']:6.2f}s "
              f"{final}")
    now = statistics.median(r["wall"] for r in records["now"])
    for name in list(VARIANTS)[1:]:
        ratio = statistics.median(r["wall"] for r in records[name]) / now
        print(f"launch to result, {name} / now: {ratio:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"train_args": args.train_args, "records": records}, f, indent=2)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
