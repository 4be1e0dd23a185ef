"""Faults and misuse: signals, divergence, concurrent writers, full disks, damaged files, bad input.

Every case ends in one line on stderr, a documented exit status, and no data lost.
"""

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import run_main

from purejaxppo.errors import Interrupted
from purejaxppo.run import layout
from purejaxppo.run.checkpoints import Checkpointer
from purejaxppo.run.runner import run

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--env", "CartPole-v1", "--preset", "CartPole-v1", "--num-envs", "4", "--num-steps", "32",
        "--num-minibatches", "2", "--update-epochs", "1"]
UPDATES = 12
TINY_RUN = [*TINY, "--total-timesteps", str(4 * 32 * UPDATES), "--chunk-updates", "2", "--checkpoint-every", "2"]


def read(path: Path) -> bytes:
    return path.read_bytes()


def one_error_line(result, command: str = "train") -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"purejaxppo {command}: error: "), lines[0]
    return lines[0]


def steps(run_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A finished tiny run (12 updates, chunks of 2, a checkpoint every 2, up to 10 kept)."""
    out = tmp_path_factory.mktemp("faults") / "tiny"
    done = run_main("train", *TINY_RUN, "--keep-checkpoints", "10", "--out", out)
    assert done.returncode == 0, done.stderr
    return out


def test_help_shows_what_the_default_preset_runs():
    shown = " ".join(run_main("train", "--help").stdout.split())
    assert "--num-envs N Parallel environments stepped in lock-step (vmapped). (default: 4; 16 with CartPole-v1's " \
           "preset)" in shown
    assert "(default: 0.00025; 0.0025 with CartPole-v1's preset)" in shown


# ------------------------------------------------------------------ resume and run management
def test_resuming_a_finished_run_changes_nothing(tiny):
    before = {p.name: read(p) for p in tiny.iterdir() if p.is_file()}
    again = run_main("train", "--out", tiny, "--resume")
    assert again.returncode == 0, again.stderr
    assert "preset: CartPole-v1" in again.stdout  # the run's preset, remembered
    assert "is already complete (12 updates, 1,536 env steps" in again.stdout and "nothing to do" in again.stdout
    assert "compiled" not in again.stdout
    assert {p.name: read(p) for p in tiny.iterdir() if p.is_file()} == before
    assert steps(tiny) == [2, 4, 6, 8, 10, 12]


def test_resume_remembers_run_management(tiny, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(tiny, out)
    for s in (8, 10, 12):  # as if it had been stopped after update 6
        shutil.rmtree(out / "checkpoints" / str(s))
    (out / "summary.json").unlink()
    settings = json.loads((out / "run.json").read_text())
    assert settings["keep_checkpoints"] == 10 and settings["checkpoint_every"] == 2 and settings["chunk_updates"] == 2
    resumed = run_main("train", "--out", out, "--resume")  # no run-management flag given again
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from the checkpoint at update 6" in resumed.stdout
    assert steps(out) == [2, 4, 6, 8, 10, 12]  # every 2 updates, and none rotated out (10 kept)
    assert read(out / "metrics.csv") == read(tiny / "metrics.csv")
    assert "preset: CartPole-v1" in resumed.stdout
    assert json.loads((out / "summary.json").read_text())["preset"] == "CartPole-v1"


# ------------------------------------------------------------------ signals
def test_a_signal_before_training_saves_nothing_and_resume_starts_over(tiny, tmp_path):
    from purejaxppo.cli import resolve_resume

    out = tmp_path / "early"
    trainer, _ = resolve_resume(_resume_args(), str(tiny))

    def log(message):  # SIGTERM arrives while the run compiles
        if message.startswith("compiled in"):
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(Interrupted) as stopped:
        run(trainer, str(out), chunk_updates=2, checkpoint_every=2, log=log)
    assert stopped.value.exit_status == 143
    assert "stopped by SIGTERM at update 0; no checkpoint yet" in str(stopped.value)
    assert steps(out) == []
    resumed = run_main("train", "--out", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "the run saved no checkpoint yet: starting from update 0" in resumed.stdout
    assert read(out / "metrics.csv") == read(tiny / "metrics.csv")


def test_a_signal_after_the_last_update_lets_the_run_finish_and_says_so(tiny, tmp_path):
    from purejaxppo.cli import resolve_resume

    out = tmp_path / "late"
    trainer, _ = resolve_resume(_resume_args(), str(tiny))
    lines = []

    def log(message):  # SIGTERM arrives while the results are written
        lines.append(message)
        if message.startswith("trained "):
            os.kill(os.getpid(), signal.SIGTERM)

    run(trainer, str(out), chunk_updates=2, checkpoint_every=2, log=log)  # no Interrupted: the run is complete
    assert lines[-1] == "SIGTERM came after the last update: the run is complete and its results are written"
    assert read(out / "metrics.csv") == read(tiny / "metrics.csv")
    assert json.loads((out / "summary.json").read_text())["env_steps"] == trainer.config.total_timesteps


def _resume_args():
    from purejaxppo.cli import build_parser

    return build_parser().parse_args(["train", "--resume", "--out", "x"])


def _fault_injection():
    spec = importlib.util.spec_from_file_location("fault_injection", ROOT / "experiments" / "fault_injection.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("sig, delay", [("SIGINT", 0.3), ("SIGKILL", 0.2)])  # SIGTERM: in-process test above
def test_signal_while_training_then_resume_is_byte_identical(tiny, tmp_path, sig, delay):
    """A real process is stopped while it trains (timed from the end of its compilation);
    ``--resume`` alone then reproduces the uninterrupted metrics.csv byte for byte."""
    faults = _fault_injection()
    run_args = [*TINY_RUN, "--keep-checkpoints", "10"]
    record = faults.trial(str(tmp_path / "run"), sig, delay, read(tiny / "metrics.csv"),
                          dict(os.environ, PYTHONUNBUFFERED="1"), after_compile=True, run_args=run_args)
    assert record["status_ok"] and record["returncode"] != 0, record  # stopped before the end, as promised
    if sig == "SIGINT":  # the stop's one line: not labelled an error, it says where the run can continue
        assert re.fullmatch(r"purejaxppo train: stopped by SIGINT at update \d+; checkpoint at update \d+; continue "
                            r"with --resume", record["message"]), record["message"]
    assert record["resume_returncode"] == 0, record
    assert record["identical"] and not record["damaged_left"], record


# ------------------------------------------------------------------ divergence
def test_divergence_stops_the_run_and_keeps_the_last_finite_checkpoint(tmp_path, monkeypatch):
    # With lr 1000 the update that first gives non-finite losses depends on the minibatches' order: with the
    # packed-word shuffle (purejaxppo/core/tuning.py) it is update 2, after one finite checkpoint.
    monkeypatch.setenv("PUREJAXPPO_TUNING", "shuffle=packed")
    out = tmp_path / "diverged"
    done = run_main("train", "--env", "Pendulum-v1", "--preset", "none", "--num-envs", "4", "--num-steps", "64",
                    "--num-minibatches", "2", "--update-epochs", "2", "--lr", "1000", "--total-timesteps", "2560",
                    "--checkpoint-every", "1", "--chunk-updates", "1", "--keep-checkpoints", "1", "--out", out)
    assert done.returncode == 3
    line = one_error_line(done)
    assert "training diverged: losses/policy_loss is not finite at update 2" in line
    assert "the last finite checkpoint, at update 1, is kept" in line
    summary = json.loads((out / "summary.json").read_text())
    assert summary["diverged"] == {"update": 2, "metric": "losses/policy_loss", "env_steps": 512}
    assert summary["env_steps"] == 512 and summary["final_return"] is None  # no episode ended: not 0
    assert steps(out) == [1]  # the non-finite state was never saved, so update 1 was not rotated out
    ckpt = Checkpointer(str(out / "checkpoints"))
    like = jax.eval_shape(lambda: _restored_like(out))
    _, state, _, _ = ckpt.restore(like, log=lambda m: None)
    ckpt.close()
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(state.params))


def _restored_like(out: Path):
    from purejaxppo.core.config import HParams
    from purejaxppo.core.train import make_trainer

    config = layout.read_config(str(out))
    return make_trainer(config).init(jax.random.key(config.seed), HParams.from_config(config))


# ------------------------------------------------------------------ concurrent writers
def test_a_locked_folder_refuses_a_second_writer(tiny, tmp_path):
    out = tmp_path / "busy"
    with layout.locked(str(out)):
        second = run_main("train", *TINY_RUN, "--out", out)
        assert second.returncode == 2
        line = one_error_line(second)
        assert "is in use by another run, sweep or RLHF study (the lock was last taken by process " in line, line
        assert line.endswith("accepted: wait until it ends, or use another folder"), line
        sweep = run_main("sweep", *TINY, "--total-timesteps", "128", "--out", out)
        assert "is in use by another run" in one_error_line(sweep, "sweep")
    with layout.locked(str(tiny)):  # (an evaluation, a reader, needs no lock: test_folders)
        resumed = run_main("train", "--out", tiny, "--resume")
        assert "is in use by another run" in one_error_line(resumed)
    assert sorted(os.listdir(out)) == [layout.LOCK]  # nothing was written


def test_the_lock_of_a_killed_process_is_released(tmp_path):
    code = "import sys, time; from purejaxppo.run import layout\nwith layout.locked(sys.argv[1]):\n" \
           "    print('locked', flush=True); time.sleep(600)\n"
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(Exception, match=f"process {holder.pid}"), layout.locked(str(tmp_path)):
            pass
    finally:
        holder.kill()
        holder.wait()
    with layout.locked(str(tmp_path)):  # SIGKILL released it
        pass


# ------------------------------------------------------------------ full disk, damaged files
def test_a_full_disk_while_checkpointing_is_one_line_and_keeps_earlier_checkpoints(tiny, tmp_path):
    out = tmp_path / "full"
    shutil.copytree(tiny, out)
    for s in (6, 8, 10, 12):
        shutil.rmtree(out / "checkpoints" / str(s))
    (out / "summary.json").unlink()

    # Writes past 8 kB fail (EFBIG: Python ignores SIGXFSZ), as they would on a full disk (ENOSPC).
    limited = ("import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (8000, 8000)); "
               "sys.argv = ['purejaxppo'] + sys.argv[1:]; runpy.run_module('purejaxppo.cli', run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", limited, "train", "--out", str(out), "--resume",
                           "--compilation-cache", "off"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    line = one_error_line(done)
    assert "saving a checkpoint in" in line and "failed: File too large" in line
    assert "the checkpoints on disk are intact (updates 2, 4)" in line
    resumed = run_main("train", "--out", out, "--resume")  # space again: it continues from update 4
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from the checkpoint at update 4" in resumed.stdout
    assert read(out / "metrics.csv") == read(tiny / "metrics.csv")


def test_every_checkpoint_damaged_is_one_line(tiny, tmp_path):
    out = tmp_path / "damaged"
    shutil.copytree(tiny, out)
    (out / "summary.json").unlink()
    for s in steps(out):
        for f in (out / "checkpoints" / str(s) / "state").rglob("*"):
            if f.is_file() and f.parent.name == "d":
                f.write_bytes(f.read_bytes()[:10])
    done = subprocess.run([sys.executable, "-m", "purejaxppo.cli", "train", "--out", str(out), "--resume"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert one_error_line(done).endswith("is damaged; they were moved to damaged/; to train the run again from "
                                         "update 0, start it without --resume and with --overwrite")
    assert len(os.listdir(out / "checkpoints" / "damaged")) == 6  # set aside, not deleted
    assert done.stdout.count("is damaged (") == 6
    # Resumed again, the run has no checkpoint left, but it is not a run that saved none: starting
    # from update 0 would replace its metrics (with other numbers if a safe change came with it).
    metrics = read(out / "metrics.csv")
    again = run_main("train", "--out", out, "--resume", "--total-timesteps", "4096", "--allow-safe-changes")
    assert again.returncode == 2
    line = one_error_line(again)
    assert "every checkpoint of the run in" in line and "is damaged (moved to damaged/: 2-" in line, line
    listed = line.split("moved to damaged/: ")[1].split(")")[0].split(", ")
    assert [int(name.split("-")[0]) for name in listed] == [2, 4, 6, 8, 10, 12], listed  # by update
    assert line.endswith("nothing to resume from; to train the run again from update 0, start it without --resume "
                         "and with --overwrite"), line
    assert read(out / "metrics.csv") == metrics


def test_unretrieved_tensorstore_read_errors_are_dropped_and_other_task_errors_kept(caplog):
    # The damaged-checkpoint test above prints one line only if asyncio's report of each abandoned
    # TensorStore read is dropped; when the garbage collector meets those tasks varies from run
    # to run, so the filter is checked here on tasks made to fail the same way.
    import asyncio
    import gc

    from purejaxppo.run.quiet import _drop_unretrieved_read_errors

    _drop_unretrieved_read_errors()

    async def fail(text):
        raise ValueError(text)

    loop = asyncio.new_event_loop()
    try:
        for text in ('OUT_OF_RANGE: Error reading "update_step/.zarray" [tensorstore_spec=\'{"driver":"zarr"}\']',
                     "an unrelated failure"):
            task = loop.create_task(fail(text))
            loop.run_until_complete(asyncio.sleep(0))
            assert task.done()
            del task
            gc.collect()
        # a bare future (not a task) that holds the error is reported as "Future exception ..."
        for text in ('OUT_OF_RANGE: Error opening "zarr" driver [tensorstore_spec=\'{"driver":"zarr"}\']',
                     "another unrelated failure"):
            future = loop.create_future()
            future.set_exception(ValueError(text))
            del future
            gc.collect()
    finally:
        loop.close()
    reported = [r for r in caplog.records
                if r.getMessage().startswith(("Task exception was never retrieved", "Future exception was never"))]
    assert [str(r.exc_info[1]) for r in reported] == ["an unrelated failure", "another unrelated failure"]


# ------------------------------------------------------------------ bad input: one line, exit 2, nothing written
@pytest.fixture(scope="module")
def folders(tiny, tmp_path_factory):
    base = tmp_path_factory.mktemp("misuse")
    (base / "afile").write_text("x")
    sweep_dir = base / "a_sweep"
    sweep_dir.mkdir()
    layout.write_config(str(sweep_dir), layout.read_config(str(tiny)), sweep={"num_seeds": 2})
    truncated = base / "truncated"
    shutil.copytree(tiny, truncated)
    text = (truncated / "config.json").read_text()
    (truncated / "config.json").write_text(text[: len(text) // 2])
    edited = base / "edited"  # a value changed by hand to one that is not accepted
    shutil.copytree(tiny, edited)
    (edited / "config.json").write_text(json.dumps(dict(json.loads(text), num_envs=-3)))
    return {"BASE": str(base), "RUN": str(tiny), "SWEEP": str(sweep_dir), "TRUNC": str(truncated), "EDITED": str(edited)}


MISUSE = [
    # (command, arguments, a phrase of the one-line error)
    ("train", ["--seed", "99999999999999999999"], "seed: got 99999999999999999999; accepted: an integer from 0"),
    ("train", ["--seed", "-1"], "seed: got -1"),
    ("train", ["--out", "{BASE}/afile/sub"], "cannot make the folder"),
    ("train", ["--out", "{BASE}/afile"], "exists and is not a folder"),
    ("train", ["--out", ""], "--out: the folder name is empty"),
    ("train", ["--out", "/proc/purejaxppo/run"], "--out: cannot make the folder /proc/purejaxppo/run"),
    ("train", ["--resume", "--out", "{BASE}/nowhere"], "no run folder at"),
    ("train", ["--resume", "--out", "{TRUNC}"], "is damaged (not valid JSON"),
    ("train", ["--resume", "--out", "{SWEEP}"], "not a training run; accepted: a training run's folder"),
    ("train", ["--resume", "--out", "{RUN}", "--lr", "0.1"], "the settings differ from the run's: lr"),
    # --preset none on resume means the plain defaults, as on a new run (it was ignored)
    ("train", ["--resume", "--out", "{RUN}", "--preset", "none"], "; drop --preset none (a resumed run starts from "
                                                                  "its saved settings) and the flags that change"),
    ("train", ["--out", "{RUN}"], "already holds a run"),
    ("train", ["--lr", "nan"], "lr: got nan"),
    ("train", ["--lr", "1e400"], "lr: got inf"),
    ("train", ["--gamma", "1.5"], "gamma: got 1.5; accepted: a number in [0, 1]"),
    ("train", ["--env", "Pendulum-v1", "--log-std-init", "nan"], "log_std_init: got nan"),
    ("train", ["--env", "CartPole-v1", "--no-clip-actions"], "clip_actions: got False, but CartPole-v1 has a discrete"),
    ("train", ["--num-envs", "0"], "num_envs: got 0"),
    ("train", ["--actor-hidden", "0"], "actor_hidden"),
    ("train", ["--total-timesteps", "10"], "is less than one batch"),
    ("train", ["--num-minibatches", "3"], "does not divide the batch"),
    ("train", ["--activation", "sigmoid"], "activation: got 'sigmoid'"),
    ("train", ["--env", "CartPol-v1"], "did you mean"),
    ("train", ["--chunk-updates", "0"], "--chunk-updates: 0 is out of range"),
    ("train", ["--keep-checkpoints", "0"], "--keep-checkpoints: 0 is out of range"),
    ("train", ["--allow-safe-changes"], "--allow-safe-changes: only applies with --resume"),
    ("train", ["--resume", "--overwrite", "--out", "{RUN}"], "contradict each other"),
    ("train", ["--preset", "Hopper"], "unknown preset"),
    ("eval", ["--run", "{SWEEP}"], "not a training run; accepted: a training run's folder"),
    ("eval", ["--run", "{TRUNC}"], "is damaged (not valid JSON"),
    ("eval", ["--run", "{EDITED}"], "edited/config.json holds a value that is not accepted: num_envs: got -3"),
    ("train", ["--resume", "--out", "{EDITED}"], "edited/config.json holds a value that is not accepted: num_envs"),
    ("eval", ["--run", "{RUN}", "--seed", "-1"], "--seed: -1 is out of range"),
    ("eval", ["--run", "{RUN}", "--render", "{BASE}/nodir/x.gif"], "--render: the folder"),
    ("eval", ["--run", "{RUN}", "--render", "{BASE}/x.png"], "is not a .gif file name"),
    ("eval", ["--run", "{RUN}", "--step", "999"], "no checkpoint at update 999"),
    ("eval", ["--run", "{RUN}", "--episodes", "0"], "--episodes: 0 is out of range"),
    ("eval", ["--run", "{BASE}/nowhere"], "no run folder at"),
    ("eval", ["--run", "{BASE}/afile"], "afile is a file, not a run folder; accepted: the --out folder of a"),
    ("eval", ["--run", "{RUN}", "--render", "{BASE}/afile/x.gif"], "afile is a file, not a folder; accepted: a path in"),
    ("sweep", ["--grid", "lr=1e-3", "--grid", "lr=2e-3"], "grid: lr is given twice"),
    ("sweep", ["--grid", "lr=1e-3", "--sample", "lr=uniform:1e-4:1e-3", "--num-samples", "2"],
     "lr is both in the grid and in the random search"),
    ("sweep", ["--sample", "lr=uniform:1e-4:1e-3", "--sample", "lr=uniform:1e-4:1e-2", "--num-samples", "2"],
     "sample: lr is given twice"),
    ("sweep", ["--sample", "lr=log-uniform:0:1", "--num-samples", "2"], "needs LOW > 0"),
    ("sweep", ["--grid", "num_envs=4,8"], "num_envs is a static setting"),
    ("sweep", ["--grid", "lr="], "empty list of values"),
    ("sweep", ["--grid", "lr=abc"], "value 'abc' is not a number"),
    ("sweep", ["--grid", "gamma=0.9,1.2"], "gamma: got 1.2"),
    ("sweep", ["--out", "{BASE}/afile"], "exists and is not a folder"),
    ("sweep", ["--out", ""], "--out: the folder name is empty"),
]


@pytest.mark.parametrize("command, args, phrase", MISUSE, ids=[" ".join(c[:2][1])[:40] or c[0] for c in MISUSE])
def test_misuse_is_one_line_exit_2_and_writes_nothing(folders, command, args, phrase):
    args = [a.format(**folders) for a in args]
    before = _snapshot(folders["BASE"]), _snapshot(folders["RUN"])
    extra = ["--out", os.path.join(folders["BASE"], "fresh")] if command != "eval" and "--out" not in args else []
    done = run_main(command, *args, *extra)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert phrase in one_error_line(done, command)
    assert (_snapshot(folders["BASE"]), _snapshot(folders["RUN"])) == before


def _snapshot(folder: str) -> dict[str, bytes]:
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            if name != layout.LOCK:
                path = os.path.join(root, name)
                out[os.path.relpath(path, folder)] = Path(path).read_bytes()
    return out
