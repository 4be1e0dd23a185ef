"""Where the test suite's time goes: each test's seconds, and how many of them XLA spent compiling.

    python experiments/time_tests.py --json results/speed/cpu_xeon_time_tests.json
    python experiments/time_tests.py --json out.json -- tests/test_suites.py -n 0

Runs pytest (the README's command, its workers included, plus anything after ``--``) with this file
loaded as a plugin in every worker. The plugin listens to JAX's compile-duration event and adds each
compilation's seconds to the test running at the time, as a large program (0.3 s or more: a training
run, an evaluation) or a small one (an array operation run outside ``jit``, which JAX compiles
alone). Compilations in processes a test starts (the command line in a subprocess, a notebook's
kernel, the fake-device child) are not seen: their seconds count as the test's, not as compiling.
Prints the files and tests that take longest with their compile share, and the totals.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

LARGE = 0.3  # seconds: a compilation at least this long is a program, not an array operation
EVENT = "/jax/core/compile/backend_compile_duration"
SAVED = "/jax/compilation_cache/compile_time_saved_sec"  # a program loaded from the persistent cache

# ---- the plugin (loaded by pytest in each worker as ``-p time_tests``) --------------------------------------
_current: list[str | None] = [None]
_compile: dict = collections.defaultdict(lambda: [0.0, 0, 0.0, 0])  # large s, large n, small s, small n
_seconds: dict = collections.defaultdict(float)
_programs: dict = collections.defaultdict(list)  # test -> [[function name, seconds], ...] of its large compilations
_saved: dict = collections.defaultdict(lambda: [0.0, 0])  # test -> compile seconds saved by cache hits, hits


def _listen(event, duration, fun_name=None, **_):
    if _current[0] is None:
        return
    if event == SAVED:
        row = _saved[_current[0]]
        row[0] += duration
        row[1] += 1
    elif event == EVENT:
        row = _compile[_current[0]]
        if duration >= LARGE:
            row[0] += duration
            row[1] += 1
            _programs[_current[0]].append([str(fun_name), round(duration, 3)])
        else:
            row[2] += duration
            row[3] += 1


def pytest_configure(config):
    import jax

    jax.monitoring.register_event_duration_secs_listener(_listen)


def pytest_runtest_logstart(nodeid, location):
    _current[0] = nodeid


def pytest_runtest_logreport(report):
    _seconds[report.nodeid] += report.duration  # setup, call and teardown


def pytest_unconfigure(config):
    folder = os.environ.get("PUREJAXPPO_TEST_TIME_DIR")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is None and getattr(config.option, "numprocesses", None):
        return  # the controller of workers: it hears their reports again, and compiles nothing
    if folder:
        name = worker or "main"
        with open(os.path.join(folder, f"{name}.json"), "w") as f:
            json.dump({"compile": dict(_compile), "seconds": dict(_seconds), "programs": dict(_programs),
                       "saved": dict(_saved)}, f)


# ---- the command -----------------------------------------------------------------------------------------
def merge(folder: str) -> dict:
    """Per test: seconds, large-compile seconds and count, small-compile seconds and count, the large
    programs' names and seconds, and the seconds and count of programs the persistent cache supplied."""
    tests: dict = {}
    for path in glob.glob(os.path.join(folder, "*.json")):
        with open(path) as f:
            part = json.load(f)
        for nodeid, seconds in part["seconds"].items():
            if seconds > 0 or nodeid in part["compile"]:
                large_s, large_n, small_s, small_n = part["compile"].get(nodeid, [0.0, 0, 0.0, 0])
                saved_s, hits = part.get("saved", {}).get(nodeid, [0.0, 0])
                tests[nodeid] = {"seconds": seconds, "large_compile_s": large_s, "large_compiles": large_n,
                                 "small_compile_s": small_s, "small_compiles": small_n, "cache_saved_s": saved_s,
                                 "cache_hits": hits, "programs": part.get("programs", {}).get(nodeid, [])}
    return tests


def by_file(tests: dict) -> dict:
    files: dict = collections.defaultdict(lambda: collections.Counter())
    for nodeid, row in tests.items():
        files[nodeid.split("::")[0]].update({k: v for k, v in row.items() if k != "programs"})
    return {name: dict(c) for name, c in files.items()}


def table(rows: dict, top: int, title: str) -> str:
    lines = [f"{title:<96} {'s':>7} {'compiling':>9} {'share':>6} {'programs':>8}"]
    for name, r in sorted(rows.items(), key=lambda kv: -kv[1]["seconds"])[:top]:
        compiling = r["large_compile_s"] + r["small_compile_s"]
        share = compiling / r["seconds"] if r["seconds"] else 0.0
        lines.append(f"{name[:96]:<96} {r['seconds']:7.1f} {compiling:9.1f} {share:6.0%} {int(r['large_compiles']):8d}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", metavar="FILE", help="write every test's figures here")
    p.add_argument("--top", type=int, default=25, help="files and tests listed (default 25)")
    args = p.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory(prefix="purejaxppo-time-tests-") as folder:
        here = os.path.dirname(os.path.abspath(__file__))
        env = dict(os.environ, PUREJAXPPO_TEST_TIME_DIR=folder,
                   PYTHONPATH=os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])))
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "time_tests", *extra], cwd=root, env=env,
                              check=False)
        wall = time.perf_counter() - start
        tests = merge(folder)
    if not tests:
        sys.exit("time_tests: no test reported its time (did pytest collect any?)")
    files = by_file(tests)
    total = sum(r["seconds"] for r in tests.values())
    large = sum(r["large_compile_s"] for r in tests.values())
    small = sum(r["small_compile_s"] for r in tests.values())
    print(table(files, args.top, "file"))
    print()
    print(table(tests, args.top, "test"))
    print(f"\nwall {wall:.0f} s (pytest exit {done.returncode}); tests' seconds summed over workers {total:.0f} s, of which "
          f"compiling {large + small:.0f} s ({(large + small) / total:.0%}): {large:.0f} s in "
          f"{sum(r['large_compiles'] for r in tests.values())} programs of {LARGE} s or more, {small:.0f} s in "
          f"{sum(r['small_compiles'] for r in tests.values())} smaller compilations; the persistent cache supplied "
          f"{sum(r['cache_hits'] for r in tests.values())} programs, saving "
          f"{sum(r['cache_saved_s'] for r in tests.values()):.0f} s")
    record = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "date": time.strftime("%Y-%m-%d"), "command": "python experiments/time_tests.py " + " ".join(argv),
              "pytest_exit": done.returncode, "wall_s": wall, "tests_s": total, "large_compile_s": large,
              "small_compile_s": small, "files": files, "tests": tests}
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)
    return record


if __name__ == "__main__":
    main()
