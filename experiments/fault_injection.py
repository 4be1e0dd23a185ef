"""Fault injection: stop training runs with SIGINT, SIGTERM or SIGKILL at random moments, resume
them, and check that every resumed run reproduces the uninterrupted run's ``metrics.csv`` byte for byte.

Each trial starts ``purejaxppo train`` in its own process group, sends one signal to the group
after a random delay (seeded: the same ``--seed`` gives the same trials), then runs
``purejaxppo train --resume`` until the run completes. The delays cover start-up, compilation,
training, checkpoint writes and the final writes. A trial passes when

- the interrupted process exited as promised: 130 after SIGINT, 143 after SIGTERM (or 0 when
  the signal came after the run had finished), killed after SIGKILL;
- the resume exited 0, and its ``metrics.csv`` equals the reference's byte for byte;
- the run's checkpoints are all readable (nothing damaged was left behind).

    python experiments/fault_injection.py --trials 24 --out /tmp/faults

prints one line per trial and a summary, and writes ``faults.json`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

SIGNALS = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM, "SIGKILL": signal.SIGKILL}
# 40 updates of CartPole's preset (16 envs x 128 steps), 4 per chunk, a checkpoint every 8.
RUN_ARGS = ["--total-timesteps", "81920", "--chunk-updates", "4", "--checkpoint-every", "8", "--seed", "7"]


def command(out: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "purejaxppo.cli", "train", "--out", out, *RUN_ARGS, *extra]


def expected_status(sig: str, returncode: int) -> bool:
    """Killed by SIGKILL; 128 + the signal's number for SIGINT and SIGTERM (or killed by the signal,
    when it came while the interpreter was starting, before any of the program ran, or shutting
    down, after all of it); 0 when the signal came after the run's last chunk (it then finishes)."""
    if sig == "SIGKILL":
        return returncode in (-signal.SIGKILL, 0)
    return returncode in (128 + SIGNALS[sig], -SIGNALS[sig], 0)


def train(out: str, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(command(out, *extra), env=env, capture_output=True, text=True, timeout=600)


def trial(out: str, sig: str, delay: float, reference: bytes, env: dict[str, str], after_compile: bool = False,
          run_args: list[str] | None = None) -> dict:
    """One interrupted run and its resume; returns the record of what happened.

    ``delay`` counts from the launch, or with ``after_compile`` from the moment the run prints
    that it has compiled (then the signal lands while it trains or saves).
    """
    shutil.rmtree(out, ignore_errors=True)
    args = command(out) if run_args is None else [*command(out)[:6], *run_args]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    if after_compile:
        for line in proc.stdout:
            if line.startswith("compiled in"):
                break
    time.sleep(delay)
    if proc.poll() is None:
        os.killpg(proc.pid, SIGNALS[sig])
    _, err = proc.communicate(timeout=600)
    record = {"signal": sig, "delay": round(delay, 2), "after_compile": after_compile, "returncode": proc.returncode,
              "status_ok": expected_status(sig, proc.returncode), "message": _last_line(err)}
    resumes = 0
    while True:  # a run stopped before it made its folder cannot be resumed: start it again
        if not os.path.exists(os.path.join(out, "config.json")):
            done = subprocess.run([*args, "--overwrite"], env=env, capture_output=True, text=True, timeout=600)
        else:
            # only --resume: the run's settings and run management come from its folder
            done = subprocess.run([sys.executable, "-m", "purejaxppo.cli", "train", "--out", out, "--resume"],
                                  env=env, capture_output=True, text=True, timeout=600)
        resumes += 1
        if done.returncode != 0 or resumes > 2:
            break
        if "already complete" in done.stdout or os.path.exists(os.path.join(out, "summary.json")):
            break
    record["resume_returncode"] = done.returncode
    record["resume_message"] = _last_line(done.stderr) or _last_line(done.stdout)
    metrics = os.path.join(out, "metrics.csv")
    record["identical"] = os.path.exists(metrics) and open(metrics, "rb").read() == reference
    record["damaged_left"] = os.path.exists(os.path.join(out, "checkpoints", "damaged"))
    record["passed"] = bool(record["status_ok"] and done.returncode == 0 and record["identical"]
                            and not record["damaged_left"])
    return record


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0, help="seed of the signals and delays")
    parser.add_argument("--out", default="faults", help="working folder (the runs and faults.json)")
    parser.add_argument("--signals", default="SIGINT,SIGTERM,SIGKILL")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    ref_dir = os.path.join(args.out, "reference")
    shutil.rmtree(ref_dir, ignore_errors=True)
    t0 = time.perf_counter()
    done = train(ref_dir, env)
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        return 1
    seconds = time.perf_counter() - t0  # the whole uninterrupted run, start-up included (cache warm after)
    done = train(ref_dir, env, "--overwrite")
    warm = time.perf_counter() - t0 - seconds
    reference = open(os.path.join(ref_dir, "metrics.csv"), "rb").read()
    print(f"reference run: {seconds:.1f} s cold, {warm:.1f} s with a warm compilation cache")
    rng = random.Random(args.seed)
    names = args.signals.split(",")
    records = []
    train_seconds = float(json.load(open(os.path.join(ref_dir, "summary.json")))["train_seconds"])
    for i in range(args.trials):
        sig = names[i % len(names)]
        # half the trials from the launch (start-up, compilation, training, the final writes),
        # half from the end of compilation (training and checkpoint writes)
        after_compile = (i // len(names)) % 2 == 1
        delay = rng.uniform(0.0, train_seconds * 1.1) if after_compile else rng.uniform(0.3, warm * 1.05)
        r = trial(os.path.join(args.out, f"trial{i}"), sig, delay, reference, env, after_compile)
        records.append(r)
        start = "compiled" if after_compile else "launch"
        print(f"{i:3d} {sig:8s} {r['delay']:5.2f} s after {start:8s}: exit {r['returncode']:4d} "
              f"resume exit {r['resume_returncode']} identical={r['identical']} -> "
              f"{'ok' if r['passed'] else 'FAILED'}  [{r['message']}]", flush=True)
    passed = sum(r["passed"] for r in records)
    print(f"{passed}/{len(records)} trials reproduced the uninterrupted metrics.csv byte for byte")
    with open(os.path.join(args.out, "faults.json"), "w") as f:
        json.dump({"run_args": RUN_ARGS, "seed": args.seed, "trials": records}, f, indent=2)
    return 0 if passed == len(records) else 1


if __name__ == "__main__":
    sys.exit(main())
