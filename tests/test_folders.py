"""A run folder and what a user does to it (issue 30): each command keeps to its own kind of folder
and its own files, resume trusts the checkpoints over config.json, run.json is checked like the
flags, absurd sizes and full disks are one line before anything is lost, a reader needs no lock.

Every case runs the command line in this process on one tiny run trained once; most stop before
anything compiles."""

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import run_main

from purejaxppo.errors import ConfigError
from purejaxppo.run import layout

TINY = ["--env", "CartPole-v1", "--preset", "CartPole-v1", "--num-envs", "4", "--num-steps", "32",
        "--num-minibatches", "2", "--update-epochs", "1"]
RUN = [*TINY, "--total-timesteps", str(4 * 32 * 8), "--chunk-updates", "2", "--checkpoint-every", "2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny run: 8 updates, a checkpoint every 2 (the last 3 kept)."""
    out = tmp_path_factory.mktemp("folders") / "run"
    done = run_main("train", *RUN, "--out", out)
    assert done.returncode == 0, done.stderr
    return out


def copy(trained: Path, tmp_path: Path, name: str = "run") -> Path:
    out = tmp_path / name
    shutil.copytree(trained, out)
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != layout.LOCK}


def one_line(done, command: str) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"purejaxppo {command}: error: "), lines[0]
    return lines[0]


# ------------------------------------------------------------------ one kind of run per folder
@pytest.mark.parametrize("stage", ["demo", "sft"])
def test_rlhf_refuses_a_training_runs_folder_and_keeps_it(trained, tmp_path, stage):
    out = copy(trained, tmp_path)
    before = snapshot(out)
    done = run_main("rlhf", stage, "--tiny", "--out", out, "--overwrite")
    assert done.returncode == 2
    assert "holds a training run (purejaxppo train), not an RLHF study" in one_line(done, "rlhf")
    assert snapshot(out) == before


def test_rlhf_refuses_a_sweeps_folder_and_files_no_study_wrote(trained, tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    layout.write_config(str(sweep), layout.read_config(str(trained)), sweep={"num_seeds": 1})
    (sweep / "results.csv").write_text("the sweep's")
    done = run_main("rlhf", "demo", "--tiny", "--out", sweep)
    assert "holds a sweep (purejaxppo sweep), not an RLHF study" in one_line(done, "rlhf")
    assert (sweep / "results.csv").read_text() == "the sweep's"
    mine = tmp_path / "mine"
    (mine / "checkpoints").mkdir(parents=True)
    (mine / "checkpoints" / "model.pt").write_text("mine")
    done = run_main("rlhf", "demo", "--tiny", "--out", mine)
    assert "holds files that no purejaxppo run wrote (checkpoints); they are kept" in one_line(done, "rlhf")
    assert (mine / "checkpoints" / "model.pt").read_text() == "mine"


def test_rlhf_takes_the_folders_lock(tmp_path):
    out = tmp_path / "study"
    with layout.locked(str(out)):  # another writer (a run, a sweep, another study) holds it
        done = run_main("rlhf", "demo", "--tiny", "--out", out)
    assert "is in use by another run, sweep or RLHF study" in one_line(done, "rlhf")
    assert os.listdir(out) == [layout.LOCK]


def test_train_overwrite_refuses_a_study_and_files_no_run_wrote(tmp_path):
    study = tmp_path / "study"
    (study / "checkpoints" / "sft").mkdir(parents=True)
    (study / "stages").mkdir()
    (study / "settings.json").write_text("{}")
    before = snapshot(study)
    done = run_main("train", *TINY, "--out", study, "--overwrite")
    assert "holds an RLHF study (purejaxppo rlhf), not a training run" in one_line(done, "train")
    assert snapshot(study) == before and (study / "checkpoints" / "sft").is_dir()
    own = tmp_path / "own"
    (own / "tensorboard").mkdir(parents=True)
    (own / "tensorboard" / "events").write_text("mine")
    (own / "results.csv").write_text("mine")
    for command in ("train", "sweep"):
        done = run_main(command, *TINY, "--out", own, "--overwrite")
        assert "holds files that no purejaxppo run wrote (tensorboard, results.csv); they are kept" in \
            one_line(done, command)
    assert (own / "results.csv").read_text() == "mine" and (own / "tensorboard" / "events").read_text() == "mine"


def test_overwrite_removes_only_what_its_kind_of_run_writes(trained, tmp_path):
    out = copy(trained, tmp_path)
    (out / "results.csv").write_text("mine")  # a name a sweep writes, in a training run's folder
    (out / "notes.txt").write_text("mine")
    layout.clear_run(str(out), "train")
    assert sorted(os.listdir(out)) == sorted([layout.LOCK, "notes.txt", "results.csv"])
    layout.clear_run(str(tmp_path / "nothing"), "train")  # no run there: nothing to do


# ------------------------------------------------------------------ resume trusts the checkpoints
@pytest.mark.parametrize("field, value", [("lr", 0.001), ("env", "Acrobot-v1"), ("num_envs", 8), ("seed", 1)])
def test_resume_refuses_a_config_json_that_differs_from_the_checkpoints(trained, tmp_path, field, value):
    out = copy(trained, tmp_path)
    for s in (6, 8):  # as if stopped after update 4
        shutil.rmtree(out / "checkpoints" / str(s))
    (out / "summary.json").unlink()
    config = json.loads((out / "config.json").read_text())
    was = config[field]
    (out / "config.json").write_text(json.dumps(dict(config, **{field: value})))
    before = snapshot(out)
    done = run_main("train", "--resume", "--out", out)
    line = one_line(done, "train")
    assert f"the checkpoint at update 4 was made with another config than the run's config.json (or the one given): " \
           f"{field} (checkpoint: {was}, now: {value})" in line and "the checkpoints are left as they are" in line
    assert snapshot(out) == before and not (out / "checkpoints" / "damaged").exists()


def test_a_checkpoint_of_another_structure_is_not_damage(trained, tmp_path):
    """A state whose arrays do not fit (a checkpoint made by another version with the same config
    record) is refused in one line and left where it is, never moved to damaged/."""
    out = copy(trained, tmp_path)
    (out / "summary.json").unlink()
    for name in ("config.json", *(f"checkpoints/{s}/meta/metadata" for s in (4, 6, 8))):
        path = out / name
        record = json.loads(path.read_text())
        if "config" in record:
            record["config"]["actor_hidden"] = [32, 32]
        else:
            record["actor_hidden"] = [32, 32]
        path.write_text(json.dumps(record))
    done = run_main("train", "--resume", "--out", out)
    assert "holds a state of another structure than this run's" in one_line(done, "train")
    assert sorted(os.listdir(out / "checkpoints")) == ["4", "6", "8"]


@pytest.mark.parametrize("field, value, phrase", [
    ("chunk_updates", -3, "chunk_updates: got -3"),
    ("keep_checkpoints", "x", "keep_checkpoints: got 'x'"),
    ("tensorboard", "yes", "tensorboard: got 'yes'"),
    ("stop_at_return", "high", "stop_at_return: got 'high'"),
    ("preset", 3, "preset: got 3"),
])
def test_run_json_is_checked_like_the_flags(trained, tmp_path, field, value, phrase):
    out = copy(trained, tmp_path)
    settings = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps(dict(settings, **{field: value})))
    before = snapshot(out)
    done = run_main("train", "--resume", "--out", out)
    line = one_line(done, "train")
    assert "run.json hold a value that is not accepted: " + phrase in line
    assert snapshot(out) == before


# ------------------------------------------------------------------ sizes, before anything runs
SIZES = [
    ("train", ["--total-timesteps", "1000000000000000"], "is 7812500000000 updates, more than 2**31 - 1"),
    ("sweep", ["--total-timesteps", "1000000000000000"], "is 7812500000000 updates, more than 2**31 - 1"),
    ("train", ["--num-envs", "20000000", "--num-steps", "128", "--num-minibatches", "1", "--total-timesteps",
               "2560000000"],
     "num_envs x num_steps = 2560000000 transitions per update, more than 2**31 - 1"),
    ("train", ["--env", "Breakout-MinAtar", "--preset", "none", "--num-envs", "1000000", "--num-steps", "2000",
               "--num-minibatches", "1", "--total-timesteps", "2000000000"],
     "GiB of memory; accepted: a smaller num_envs or num_steps"),
    ("train", ["--total-timesteps", "2000000000000", "--num-envs", "1000", "--num-minibatches", "1000"],
     "optimiser steps, more than 2**31 - 1"),
    ("sweep", ["--num-seeds", "99999999999999999999"], "99999999999999999999 agents x 4 environments x 32 steps"),
    ("reproduce", ["bsuite", "--tiny", "--task", "Nope"], "--task: Nope not in suite bsuite"),
    ("rlhf", ["demo", "--tiny", "--seed", "99999999999999999999"], "--seed: got 99999999999999999999; accepted"),
    ("rlhf", ["demo", "--tiny", "--kl-target", "-1"], "kl-target"),
    ("rlhf", ["demo", "--tiny", "--iterations", "15"], "multiple of eval_every"),
]


@pytest.mark.parametrize("command, args, phrase", SIZES, ids=[f"{c[0]}-{i}" for i, c in enumerate(SIZES)])
def test_absurd_sizes_are_one_line_before_anything_is_written(tmp_path, command, args, phrase):
    out = tmp_path / "out"
    done = run_main(command, *(TINY if command in ("train", "sweep") else []), *args, "--out", out)
    assert done.returncode == 2
    assert phrase in one_line(done, command)
    assert not out.exists()


def test_eval_of_absurdly_many_episodes_is_one_line(trained):
    done = run_main("eval", "--run", trained, "--episodes", "200000000")
    assert "200000000 episodes run at once need at least" in one_line(done, "eval")
    assert not (trained / "eval.json").exists()


# ------------------------------------------------------------------ full disks
def test_a_full_disk_at_the_lock_is_one_line(tmp_path, monkeypatch):
    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(layout.os, "ftruncate", full)
    for command in ("train", "sweep"):
        done = run_main(command, *TINY, "--out", tmp_path / command)
        assert "cannot write in" in one_line(done, command) and "No space left on device" in done.stderr


def test_a_full_disk_in_the_rlhf_study_is_one_line(tmp_path, monkeypatch):
    """Every write of a stage (its checkpoint through Orbax, its record, the result files) fails
    the same way: one line, whatever the writer."""
    import resource

    from purejaxppo.rlhf import pipeline

    def sft(study):  # a stage that writes a checkpoint bigger than the disk's free space
        pipeline.save_checkpoint(study.out, "sft", {"params": np.random.default_rng(0).random(1 << 18, np.float32)})
        return {}

    monkeypatch.setattr(pipeline.Study, "run_sft", sft)
    monkeypatch.setattr(pipeline, "make_task", lambda spec: None)  # the study's task and model are not needed
    monkeypatch.setattr(pipeline.seqmodel, "make_model", lambda *args: None)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, hard))  # writes past 64 kB fail (Python ignores SIGXFSZ)
    try:
        done = run_main("rlhf", "sft", "--tiny", "--out", tmp_path / "study")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert done.returncode != 0
    assert "saving the sft checkpoint" in one_line(done, "rlhf"), done.stderr


# ------------------------------------------------------------------ loggers and extras
def test_a_missing_extra_is_found_before_anything_is_made(tmp_path, monkeypatch):
    import importlib.util

    find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("tensorboardX", "wandb") else find(name, *a))
    for flag, extra in (("--tensorboard", "purejaxppo[tensorboard]"), ("--wandb", "purejaxppo[wandb]")):
        done = run_main("train", *TINY, "--out", tmp_path / "run", flag)
        assert extra in one_line(done, "train")
        assert not (tmp_path / "run").exists()


def test_no_tensorboard_on_resume_turns_the_saved_logger_off(trained, tmp_path):
    from purejaxppo.run.options import RunOptions

    assert RunOptions.resolve({"tensorboard": False, "wandb": False},
                              {"tensorboard": True, "wandb": {"project": "p"}}) == RunOptions()
    out = copy(trained, tmp_path)
    for s in (6, 8):
        shutil.rmtree(out / "checkpoints" / str(s))
    (out / "summary.json").unlink()
    settings = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps(dict(settings, tensorboard=True)))
    done = run_main("train", "--resume", "--out", out, "--no-tensorboard", "--no-wandb")
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "run.json").read_text())["tensorboard"] is False
    assert not (out / "tensorboard").exists()
    # and a reader needs no lock: evaluated while the folder is held by a writer
    with layout.locked(str(out)):
        done = run_main("eval", "--run", out, "--episodes", "2")
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "eval.json").read_text())["update"] == 8


def test_eval_on_a_read_only_disk_prints_its_results(trained, tmp_path, monkeypatch):
    from purejaxppo.errors import RunError

    out = copy(trained, tmp_path)
    before = snapshot(out)

    def read_only(path, data):
        raise RunError(f"cannot write {path}: Read-only file system; accepted: a folder with space you can write to")

    monkeypatch.setattr(layout, "write_json", read_only)
    done = run_main("eval", "--run", out, "--episodes", "2")
    assert done.returncode == 0, done.stderr
    assert "return: mean" in done.stdout and "note: cannot write" in done.stdout
    assert snapshot(out) == before


# ------------------------------------------------------------------ Python API
def test_hparams_given_to_train_are_checked_in_python():
    import jax
    import jax.numpy as jnp

    from purejaxppo import PPOConfig
    from purejaxppo.core.config import HParams
    from purejaxppo.core.train import make_train

    config = PPOConfig(env="CartPole-v1", total_timesteps=512, num_envs=4, num_steps=128)
    train, hparams = make_train(config), HParams.from_config(config)
    for bad, phrase in ((hparams.replace(lr=jnp.float32(-1.0)), "hparams.lr: got -1.0"),
                        (hparams.replace(lr=jnp.float32(np.nan)), "hparams.lr: got nan"),
                        (hparams.replace(gamma=jnp.asarray([0.9, 1.5])), "hparams.gamma: got 1.5")):
        with pytest.raises(ConfigError, match=phrase.replace(".", r"\.")):
            train(jax.random.key(0), bad)


def test_diverged_sweep_agents_have_no_score_and_are_named():
    from purejaxppo.run.sweeps import diverged_note
    from purejaxppo.scale.stats import format_table, summarize
    from purejaxppo.scale.sweep import diverged_agents

    ones = np.ones((2, 2, 3), np.float32)
    metrics = {name: ones.copy() for name in ("losses/policy_loss", "losses/value_loss", "losses/entropy",
                                              "losses/approx_kl", "charts/episodic_return", "charts/episodes")}
    metrics["losses/value_loss"][1, 0, 2] = np.nan
    assert diverged_agents(metrics).tolist() == [[False, False], [True, False]]

    class Result:
        settings, seeds = [{"lr": 1e-3}, {"lr": 10.0}], 2
        final_return = np.array([[1.0, 2.0], [np.nan, 3.0]])
        auc = np.array([[1.0, 2.0], [np.nan, 3.0]])
        diverged = np.array([[False, False], [True, False]])

    rows = summarize(Result)
    assert [r["diverged"] for r in rows] == [1, 0]  # setting 1 (3.0 of its one healthy seed) ranks first
    assert "diverged" in format_table(rows).splitlines()[0] and "1/2" in format_table(rows)
    assert diverged_note(rows).startswith("warning: 1 agent diverged (non-finite losses or returns): setting 1 (1 of "
                                          "2 seeds)")


def test_an_interrupted_study_says_how_to_finish_it(tmp_path):
    from purejaxppo.rlhf import pipeline

    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "sft.json").write_text("{}")
    note = pipeline._interrupted(str(tmp_path), "reward", pipeline.STAGES)
    assert "interrupted during stage reward; the stages done (sft) are kept; to finish the study: purejaxppo rlhf " \
           f"reward --out {tmp_path} then purejaxppo rlhf ppo --out {tmp_path}" in note


def test_a_signal_while_the_command_loads_is_one_line(tmp_path):
    """JAX, Flax and gymnax load after the command's signal handlers (they were imported with the
    module: a Ctrl-C in those seconds gave a KeyboardInterrupt traceback, or was swallowed by a
    library's import and the run went on)."""
    import signal
    import subprocess
    import sys
    import time

    p = subprocess.Popen([sys.executable, "-m", "purejaxppo.cli", "train", *TINY, "--out", str(tmp_path / "run")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert (p.returncode, err.strip()) == (130, "purejaxppo: interrupted")
    assert not (tmp_path / "run").exists()


def test_a_command_that_failed_on_a_full_disk_exits(tmp_path):
    """Orbax leaves its metadata-store thread waiting after a failed write; the command, having
    reported the failure, exits instead of waiting for it (it hung forever)."""
    import resource
    import subprocess
    import sys

    script = (
        "import sys, numpy as np\n"
        "from purejaxppo.rlhf import pipeline\n"
        "pipeline.make_task = lambda spec: None\n"
        "pipeline.seqmodel.make_model = lambda *args: None\n"
        "pipeline.Study.run_sft = lambda self: (pipeline.save_checkpoint(self.out, 'sft', "
        "{'p': np.random.default_rng(0).random(1 << 18, np.float32)}), {})[1]\n"
        f"sys.argv = ['purejaxppo', 'rlhf', 'sft', '--tiny', '--out', {str(tmp_path / 'study')!r}]\n"
        "from purejaxppo.cli import entry\n"
        "entry()\n"
    )

    def small_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (20 * 1024, resource.RLIM_INFINITY))

    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          preexec_fn=small_disk)
    assert done.returncode == 2, done.stderr
    assert "saving the sft checkpoint" in one_line(done, "rlhf")
