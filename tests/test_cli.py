"""The command line: run in this process through ``purejaxppo.cli.main`` (its output captured),
and as a subprocess where the process itself matters (the console script, a closed pipe, one
error case end to end)."""

import csv
import json
import os
import subprocess
import sys

import pytest
from helpers import run_main

from purejaxppo.core.metrics import METRIC_NAMES

TINY = ["--total-timesteps", "2048", "--num-envs", "4", "--num-steps", "64", "--num-minibatches", "2", "--update-epochs", "1"]


def run_cli(*args):
    return run_main(*args)


def run_subprocess(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "purejaxppo.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "cartpole"
    proc = run_cli("train", *TINY, "--seed", "3", "--lr", "1e-3", "--out", str(out))
    return proc, out


def test_train_writes_all_results(trained_run):
    proc, out = trained_run
    assert proc.returncode == 0, proc.stderr
    for line in ("compiled in", "steps/s", "final return"):
        assert line in proc.stdout
    assert sorted(os.listdir(out)) == [".purejaxppo.lock", "checkpoints", "config.json", "learning_curve.png",
                                       "metrics.csv", "run.json", "summary.json"]
    assert os.listdir(out / "checkpoints") == ["8"]  # saved at the end

    config = json.loads((out / "config.json").read_text())
    assert config["env"] == "CartPole-v1" and config["seed"] == 3 and config["lr"] == 1e-3
    assert config["num_envs"] == 4 and config["actor_hidden"] == [64, 64]

    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0].keys()) == ("env_steps", *METRIC_NAMES)  # every metric of the schema, in its order
    assert len(rows) == 8  # 2048 / (4 * 64)
    assert [int(r["env_steps"]) for r in rows] == [256 * (i + 1) for i in range(8)]
    assert float(rows[0]["charts/learning_rate"]) == pytest.approx(1e-3)

    summary = json.loads((out / "summary.json").read_text())
    for key in ("env", "seed", "env_steps", "final_return", "compile_seconds", "train_seconds", "sps", "backend", "versions"):
        assert key in summary, key
    assert summary["env_steps"] == 2048 and summary["backend"] == "cpu"
    assert summary["final_return"] > 5 and summary["sps"] > 0
    assert {"jax", "flax", "optax", "gymnax"} <= set(summary["versions"])

    png = (out / "learning_curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_says_what_compiles_and_how_long_it_took_last_time(tmp_path, monkeypatch):
    import re

    from purejaxppo.run import compile_times

    monkeypatch.setattr(compile_times, "_path", lambda: str(tmp_path / compile_times.FILE))  # this test's record
    first = run_cli("train", *TINY, "--seed", "3", "--lr", "1e-3", "--out", str(tmp_path / "a"))
    lines = first.stdout.splitlines()
    at = lines.index("compiling the training program ...")  # no record yet
    assert lines[at + 1].startswith("compiled in")  # said before the compile, not after
    seconds = float(re.search(r"compiled in ([0-9.]+) s", lines[at + 1]).group(1))
    again = run_cli("train", *TINY, "--seed", "4", "--lr", "1e-3", "--out", str(tmp_path / "b"))
    assert again.returncode == 0, again.stderr
    # the same program (the seed does not change it): the line names the last launch's seconds
    assert f"compiling the training program (the last launch of these settings compiled in {seconds:.1f} s)" \
        in again.stdout
    other = run_cli("train", *TINY, "--num-envs", "8", "--out", str(tmp_path / "c"))
    assert "compiling the training program ...\n" in other.stdout  # other shapes: no earlier record


def test_refuses_to_overwrite_a_run(trained_run):
    _, out = trained_run
    before = (out / "metrics.csv").read_bytes()
    proc = run_cli("train", *TINY, "--out", str(out))
    assert proc.returncode == 2
    assert "already holds a run" in proc.stderr and "--overwrite" in proc.stderr
    assert (out / "metrics.csv").read_bytes() == before


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--env", "CartPol-v1"], ["env:", "CartPol-v1", "did you mean CartPole-v1"]),
        (["--num-minibatches", "3"], ["num_minibatches: 3 does not divide", "512", "accepted"]),
        (["--num-envs", "0"], ["num_envs: got 0", "positive integer"]),
        (["--lr", "-1"], ["lr: got -1.0", "> 0"]),
        (["--lr", "fast"], ["--lr", "invalid number 'fast'"]),
        (["--lrr", "0.1"], ["unknown option --lrr", "did you mean --lr"]),
        (["--log-std-init", "-1"], ["log_std_init", "discrete action space", "continuous"]),
        (["--kl-penalty", "sometimes"], ["kl_penalty: got 'sometimes'", "off, fixed, adaptive"]),
        (["--preset", "Cartpole"], ["preset: unknown preset 'Cartpole'", "CartPole-v1"]),
        (["--gamma", "1.5"], ["gamma: got 1.5", "[0, 1]"]),
    ],
)
def test_bad_input_gets_one_line_error(args, expected, tmp_path):
    proc = run_cli("train", "--num-envs", "4", "--num-steps", "128", *args, "--out", str(tmp_path / "x"))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert lines[0].startswith("purejaxppo train: error:")
    for piece in expected:
        assert piece in lines[0], (piece, lines[0])
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("folder,expected", [
    ("/proc/no-such-folder", "cannot make the folder (No such file or directory)"),
    ("a-file", "it exists and is not a folder"),
])
@pytest.mark.parametrize("how", ["flag", "environment"])
def test_an_unusable_compilation_cache_is_one_line(folder, expected, how, tmp_path, monkeypatch):
    """A cache folder the user named that cannot be made or written: one line, nothing written.
    The default folder (nothing named) that cannot be: a one-line warning, and no cache."""
    if folder == "a-file":
        folder = str(tmp_path / "a-file")
        open(folder, "w").close()
    if how == "flag":
        proc = run_cli("train", *TINY, "--compilation-cache", folder, "--out", str(tmp_path / "x"))
        named = f"--compilation-cache {folder}: "
    else:
        monkeypatch.setenv("PUREJAXPPO_COMPILATION_CACHE", folder)
        proc = run_cli("train", *TINY, "--out", str(tmp_path / "x"))
        named = f"PUREJAXPPO_COMPILATION_CACHE={folder}: "
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert line == f"purejaxppo train: error: {named}{expected}; accepted: a folder that exists or can be made, or 'off'"
    assert not (tmp_path / "x").exists()


def test_an_unusable_default_cache_folder_warns_and_goes_on(tmp_path, monkeypatch):
    monkeypatch.delenv("PUREJAXPPO_COMPILATION_CACHE", raising=False)
    (tmp_path / "cache-home").write_text("")  # $XDG_CACHE_HOME a file: its purejaxppo/jax cannot be made
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache-home"))
    proc = run_cli("eval", "--run", str(tmp_path / "missing"))
    warning, error = proc.stderr.strip().splitlines()
    assert warning.startswith(f"purejaxppo: warning: no compilation cache: {tmp_path / 'cache-home'}/purejaxppo/jax: "
                              "cannot make the folder"), warning
    assert error.startswith("purejaxppo eval: error: no run folder at"), error  # the command went on


def test_one_line_error_from_a_real_process(tmp_path):
    proc = run_subprocess("train", "--env", "CartPol-v1", "--out", str(tmp_path / "x"))
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("purejaxppo train: error: env: unknown environment 'CartPol-v1' (did you mean CartPole-v1")
    import gymnax

    from purejaxppo.envs import brax_envs

    # every gymnax name, and the Brax names by their pattern (each task and backend named)
    assert line.endswith("; accepted: " + ", ".join(gymnax.registered_envs) + ", or brax/TASK[-BACKEND] with TASK one "
                         "of " + ", ".join(brax_envs.TASKS) + " and BACKEND one of " + ", ".join(brax_envs.BACKENDS)
                         + " (default mjx; `purejaxppo envs` lists every name)"), line
    assert not (tmp_path / "x").exists()


def test_help_lists_every_field_with_its_doc():
    proc = run_cli("train", "--help")
    assert proc.returncode == 0
    for flag in ("--env", "--preset", "--seed", "--total-timesteps", "--num-envs", "--num-steps", "--num-minibatches",
                 "--update-epochs", "--lr", "--clip-eps", "--ent-coef", "--out", "--kl-penalty", "--bootstrap-truncation"):
        assert flag in proc.stdout, flag
    assert "GAE lambda" in proc.stdout


def test_envs_command_lists_gymnax_and_probe_envs():
    proc = run_cli("envs")
    assert proc.returncode == 0
    names = proc.stdout.split()
    assert "CartPole-v1" in names and "Breakout-MinAtar" in names and "Probe-TimeLimit" in names


def test_installed_console_script_runs():
    import shutil
    from pathlib import Path

    script = shutil.which("purejaxppo") or str(Path(sys.executable).parent / "purejaxppo")
    proc = subprocess.run([script, "presets"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "CartPole-v1:" in proc.stdout and "Pendulum-v1:" in proc.stdout


def test_closed_output_pipe_is_not_a_traceback():
    # the reader closes its end before the command writes, as `purejaxppo envs | head -0` would
    proc = subprocess.Popen([sys.executable, "-m", "purejaxppo.cli", "envs"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0
    assert "Traceback" not in err and "BrokenPipe" not in err, err
