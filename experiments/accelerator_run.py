"""The accelerator session in one command: install the kit, measure, start the MinAtar suite.

On a device with Python 3.12 and JAX with CUDA (no internet), from the repository root, with the
kit built by ``experiments/accelerator_kit.py`` carried along::

    python experiments/accelerator_run.py --kit .accelerator --out $OUT

Steps, each a fresh process with its own time limit, all within ``--budget`` seconds (default 570):

1. ``install``: the kit's wheels of the distributions the device lacks (``pip install --no-index
   --no-deps``; installed ones are left as they are);
2. ``gpu_table``: ``experiments/benchmark_speed.py --platform gpu`` on the five rows of the GPU
   table beside PureJaxRL (the kit's ``peers/purejaxrl``), with mixed precision
   (``precision=bfloat16``) as a variant on the 256-seed and 16384-environment rows;
3. ``brax``: ``experiments/peer_brax.py``, Brax's own PPO trainer beside purejaxppo on hopper
   (positional, then mjx), 2048 environments x 20 steps, 32 minibatches, 4 epochs, 1.3M steps;
4. ``startup``: launch to result, ``experiments/benchmark_startup.py --repeats 1``;
5. ``minatar``: ``purejaxppo reproduce minatar`` at its published protocol, in the background for
   the rest of the budget, then stopped; its files stay in ``OUT/minatar``.

``OUT/summary.json`` lists every step's command, exit status, time and output files, and the
whole run's time (launch to result of the session). ``--dry-run`` runs the same steps at tiny
sizes on whatever JAX has (a CPU here): ``pip install --dry-run``, the benchmarks' quick sizes,
``reproduce --tiny``. ``--steps a,b`` runs some steps only.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
STEPS = ("install", "gpu_table", "brax", "startup", "minatar")
LIMITS = {"install": 60, "gpu_table": 240, "brax": 150, "startup": 60}  # seconds; minatar: what is left
GPU_ROWS = ("CartPole-v1, 2048 envs", "Breakout-MinAtar, 1024", "CartPole-v1, 256 seeds", "CartPole-v1, 64 envs",
            "CartPole-v1, 16384")


def kit_wheels(kit: str) -> list[str]:
    """The kit's wheels of distributions not installed here: installed ones are kept as they are (the
    device's own Flax or Optax is never replaced by the kit's)."""
    from importlib.metadata import PackageNotFoundError, version

    missing = []
    for path in sorted(glob.glob(os.path.join(kit, "wheels", "*.whl"))):
        try:
            version(os.path.basename(path).split("-")[0])
        except PackageNotFoundError:
            missing.append(path)
    return missing


def commands(kit: str, out: str, dry_run: bool) -> dict[str, list[str]]:
    """Each step's command line (at tiny sizes with ``dry_run``)."""
    py = sys.executable
    packages = kit_wheels(kit)
    install = [py, "-m", "pip", "install", "--no-index", "--no-deps", *(["--dry-run"] if dry_run else []),
               *packages] if packages else []
    purejaxrl = os.path.join(kit, "peers", "purejaxrl")
    peer = ["--purejaxrl", purejaxrl] if os.path.isfile(os.path.join(purejaxrl, "purejaxrl", "ppo.py")) else []
    bf16 = ["--variant", "bfloat16=precision=bfloat16", "--variant", "bfloat16 products=precision=bfloat16_products"]
    if dry_run:
        table = [py, f"{HERE}/benchmark_speed.py", "--platform", "cpu", "--quick", "--only", "CartPole-v1, 4 envs",
                 *bf16, "--variants-only-on", "4 envs", *peer]
        brax = [py, f"{HERE}/peer_brax.py", "--row", "inverted_pendulum-positional:8:4:128", "--seeds", "0",
                "--minibatches", "2", "--epochs", "1", "--eval-envs", "2"]
        startup = [py, f"{HERE}/benchmark_startup.py", "--repeats", "1", "--", "--total-timesteps", "2048",
                   "--num-envs", "4", "--num-steps", "64"]
        minatar = [py, "-m", "purejaxppo.cli", "reproduce", "minatar", "--tiny"]
    else:
        table = [py, f"{HERE}/benchmark_speed.py", "--platform", "gpu", *sum((["--only", r] for r in GPU_ROWS), []),
                 *bf16, "--variants-only-on", "256 seeds", "--variants-only-on", "16384", *peer]
        brax = [py, f"{HERE}/peer_brax.py", "--row", "hopper-positional:2048:20:1310720", "--row",
                "hopper-mjx:2048:20:1310720", "--seeds", "0", "--minibatches", "32", "--epochs", "4"]
        startup = [py, f"{HERE}/benchmark_startup.py", "--repeats", "1"]
        minatar = [py, "-m", "purejaxppo.cli", "reproduce", "minatar"]
    return {"install": install, "gpu_table": table + ["--json", f"{out}/gpu_table.json"],
            "brax": brax + ["--json", f"{out}/brax.json"], "startup": startup[:4] + ["--json", f"{out}/startup.json"]
            + startup[4:], "minatar": minatar + ["--out", f"{out}/minatar"]}


def child_env(kit: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # the MinAtar suite may share the device
    return env


def run_step(name: str, argv: list[str], limit: float, out: str, env: dict) -> dict:
    """Run one step to its end or its limit; its output goes to ``OUT/NAME.log``."""
    row = {"step": name, "command": argv, "limit_s": round(limit, 1)}
    if not argv:
        return dict(row, skipped="nothing to do (no wheels in the kit)")
    if limit <= 1:
        return dict(row, skipped="no time left in the budget")
    t = time.perf_counter()
    with open(os.path.join(out, f"{name}.log"), "w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)
        try:
            rc = proc.wait(timeout=limit)
            timed_out = False
        except subprocess.TimeoutExpired:
            _stop(proc)
            rc, timed_out = proc.returncode, True
    return dict(row, rc=rc, timed_out=timed_out, seconds=round(time.perf_counter() - t, 1))


def _stop(proc: subprocess.Popen) -> None:
    """End a step's process group: SIGTERM, then SIGKILL after 10 s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kit", default=".accelerator")
    p.add_argument("--out", default=os.environ.get("OUT", "accelerator_out"))
    p.add_argument("--budget", type=float, default=570.0, help="seconds for the whole session (default 570)")
    p.add_argument("--steps", default=",".join(STEPS), help=f"some of {','.join(STEPS)}")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes, on any backend")
    args = p.parse_args(argv)
    steps = [s for s in args.steps.split(",") if s]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        p.error(f"--steps: unknown {', '.join(unknown)}; accepted: {', '.join(STEPS)}")
    start = time.perf_counter()
    deadline = start + args.budget
    os.makedirs(args.out, exist_ok=True)
    cmds, env = commands(os.path.abspath(args.kit), os.path.abspath(args.out), args.dry_run), child_env(args.kit)
    summary = {"dry_run": args.dry_run, "budget_s": args.budget, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "kit": json.load(open(os.path.join(args.kit, "manifest.json"))) if os.path.exists(
                   os.path.join(args.kit, "manifest.json")) else None, "steps": []}

    def save():
        summary["seconds"] = round(time.perf_counter() - start, 1)
        summary["outputs"] = sorted(os.path.relpath(f, args.out) for f in glob.glob(os.path.join(args.out, "**", "*"),
                                                                                    recursive=True) if os.path.isfile(f))
        with open(os.path.join(args.out, "summary.json"), "w") as f:
            json.dump(summary, f, indent=1)

    reserve = min(30.0, args.budget / 4) if "minatar" in steps else 0.0  # the suite gets at least this long
    for name in steps:
        if name == "minatar":
            continue
        row = run_step(name, cmds[name], min(LIMITS[name], deadline - time.perf_counter() - reserve), args.out, env)
        summary["steps"].append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "command"}), flush=True)
        save()
    if "minatar" in steps:  # the rest of the budget, in the background of nothing else: the device is free now
        row = run_step("minatar", cmds["minatar"], deadline - time.perf_counter(), args.out, env)
        row["note"] = "the published protocol runs past one session: stopped at the budget, files kept"
        summary["steps"].append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "command"}), flush=True)
    save()
    return summary


if __name__ == "__main__":
    main()
