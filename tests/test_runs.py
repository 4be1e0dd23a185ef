"""Long runs: chunked training, checkpoints and exact resume, faults, logging backends.

The command-line runs here share one small CartPole configuration (60 updates) and, through
the session's compilation cache, one compiled chunk.
"""

import csv
import glob
import io
import json
import math
import os
import shutil
import signal
import struct
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import cache_misses, run_main

from purejaxppo import METRIC_NAMES, PPOConfig, make_train
from purejaxppo.cli import main as cli_main
from purejaxppo.errors import RunError
from purejaxppo.run.checkpoints import Checkpointer, checksum, from_savable, to_savable
from purejaxppo.run.compiled import auto_chunk
from purejaxppo.run.loggers import ProgressBar
from purejaxppo.run.policy import load_state
from purejaxppo.run.runner import run

SMALL = ["--env", "CartPole-v1", "--num-envs", "4", "--num-steps", "32", "--num-minibatches", "2",
         "--update-epochs", "2", "--total-timesteps", str(4 * 32 * 60), "--seed", "3"]
CHUNKS = ["--chunk-updates", "2", "--checkpoint-every", "2"]


def small_config(**changes) -> PPOConfig:
    base = PPOConfig(env="CartPole-v1", num_envs=4, num_steps=32, num_minibatches=2, update_epochs=2,
                     total_timesteps=4 * 32 * 12, seed=1)
    return base.replace(**changes)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def assert_trees_equal(a, b):
    la, lb = jax.tree_util.tree_leaves(to_savable(a)), jax.tree_util.tree_leaves(to_savable(b))
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# ---------------------------------------------------------------------------- in process

@pytest.fixture(scope="module")
def fused():
    config = small_config()
    state, metrics = jax.jit(make_train(config))(jax.random.key(config.seed))
    return config, state, jax.device_get(metrics)


def test_chunked_training_equals_the_fused_program(fused):
    config, state, metrics = fused
    out = run(config, chunk_updates=5, log=lambda m: None)  # chunks of 5, 5 and 2 updates
    assert out["chunk_updates"] == 5
    assert_trees_equal(out["state"], state)
    for name, values in metrics.items():
        np.testing.assert_array_equal(out["metrics"][name], np.asarray(values), err_msg=name)


def test_resume_from_an_earlier_checkpoint_is_bit_identical(fused, tmp_path):
    config, state, metrics = fused
    # the chunks of the test above (5, 5 and 2 updates): their programs are compiled once for both tests
    run(config, str(tmp_path), chunk_updates=5, checkpoint_every=5, keep_checkpoints=10, log=lambda m: None)
    ckpt = tmp_path / "checkpoints"
    assert sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) == [5, 10, 12]
    full_csv = read_csv(tmp_path / "metrics.csv")
    for step in ("10", "12"):  # as if the run had stopped after update 5 (before its summary)
        shutil.rmtree(ckpt / step)
    (tmp_path / "summary.json").unlink()
    # a resume from Python with another config is refused before anything is read, and moves no checkpoint aside
    refused = []
    for other in (config.replace(env="Acrobot-v1"), config.replace(num_envs=2 * config.num_envs)):
        with pytest.raises(RunError) as e:
            run(other, str(tmp_path), resume=True, log=lambda m: None)
        refused.append(str(e.value))
    assert refused[0].startswith("resume: the config differs from the run's: env (run: CartPole-v1, now: Acrobot-v1)")
    assert refused[1].startswith(f"resume: the config differs from the run's: num_envs (run: {config.num_envs}, ")
    assert all(m.endswith("accepted: the run's own config (only total_timesteps may change on resume)") for m in refused)
    assert sorted(p.name for p in ckpt.iterdir()) == ["5"]
    lines = []
    # the fresh state was typed and placed as the restored one is: the resume runs the run's own programs
    out, misses = cache_misses(lambda: run(config, str(tmp_path), resume=True, checkpoint_every=5, log=lines.append))
    assert misses == 0
    assert any("resuming from the checkpoint at update 5" in m for m in lines)
    assert out["resumed_from_update"] == 5 and out["chunk_updates"] == 5
    assert_trees_equal(out["state"], state)
    for name, values in metrics.items():
        np.testing.assert_array_equal(out["metrics"][name], np.asarray(values), err_msg=name)
    assert read_csv(tmp_path / "metrics.csv") == full_csv


def test_checkpoint_holds_the_whole_state(fused, tmp_path):
    config, state, metrics = fused
    saver = Checkpointer(str(tmp_path), keep=2)
    history = {k: np.asarray(v) for k, v in metrics.items()}
    saver.save(12, state, history, {"note": "x"})
    saver.close()
    like = jax.eval_shape(lambda: state)
    step, restored, hist, meta = Checkpointer(str(tmp_path)).restore(like)
    assert step == 12 and meta["note"] == "x" and meta["checksum"] == checksum(to_savable(state))
    assert_trees_equal(restored, state)
    assert jax.dtypes.issubdtype(restored.key.dtype, jax.dtypes.prng_key)  # keys come back as keys
    names = set(type(state).__dataclass_fields__)
    assert {"params", "opt_state", "env_state", "obs", "key", "obs_rms", "ret_rms", "kl", "update_step"} <= names
    for name, values in history.items():
        np.testing.assert_array_equal(hist[name], values)
    assert_trees_equal(from_savable(to_savable(state), state), state)


def test_arrays_with_no_elements_are_checkpointed(fused, tmp_path):
    """Orbax refuses arrays with no elements; MJX's state has them (the activations of a model without
    actuator states). They, and an empty key array, come back with their shapes and dtypes."""
    config, state, metrics = fused
    state = state.replace(env_state={"env": state.env_state, "act": jnp.zeros((config.num_envs, 0), jnp.float32),
                                     "none": jnp.zeros((0,), jnp.int32), "keys": jax.random.split(state.key, 0)})
    saver = Checkpointer(str(tmp_path))
    saver.save(3, state, {"x": np.arange(3.0)}, {})
    saver.close()
    step, restored, _, _ = Checkpointer(str(tmp_path)).restore(jax.eval_shape(lambda: state))
    assert step == 3
    for name, dtype in (("act", np.float32), ("none", np.int32)):
        assert restored.env_state[name].shape == state.env_state[name].shape and restored.env_state[name].dtype == dtype
    assert restored.env_state["keys"].shape == (0,)
    assert jax.dtypes.issubdtype(restored.env_state["keys"].dtype, jax.dtypes.prng_key)
    assert_trees_equal(restored.env_state["env"], state.env_state["env"])
    assert_trees_equal(restored.params, state.params)


def test_auto_chunk_prefers_divisors():
    assert auto_chunk(976) == 61  # 976 = 16 x 61: one executable for every chunk
    assert auto_chunk(12) == 1
    assert auto_chunk(100) == 5
    assert auto_chunk(244) == 4  # CartPole's default run: 61 chunks of 4 rather than 18 of 13 and one of 10
    assert auto_chunk(241) == 13  # a prime: no divisor near 20 chunks, so the last chunk is shorter
    for n in range(1, 400):
        k = auto_chunk(n)
        assert 1 <= k <= n and (n % k == 0 or all(n % d or not 5 <= n // d <= 80 for d in range(1, n + 1)))


def test_progress_bar_on_a_terminal_and_silent_otherwise():
    stream = io.StringIO()
    bar = ProgressBar(total_steps=1000, stream=stream, enabled=True)
    bar.log([{"env_steps": 500, "charts/episodic_return": 42.0}])
    bar.close()
    text = stream.getvalue()
    assert text.startswith("\r[") and "500/1,000 steps" in text and "return 42.0" in text and "ETA" in text
    quiet = io.StringIO()  # StringIO is not a terminal
    bar = ProgressBar(total_steps=1000, stream=quiet)
    bar.log([{"env_steps": 500, "charts/episodic_return": 42.0}])
    bar.close()
    assert quiet.getvalue() == ""


# ---------------------------------------------------------------------------- command line

@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "whole"
    done = run_main("train", *SMALL, *CHUNKS, "--keep-checkpoints", "40", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stdout + done.stderr  # no progress bar in captured output
    return out


def final_state(run_dir):
    _, _, step, state = load_state(str(run_dir), log=lambda m: None)
    return step, state


def test_sigkill_in_the_middle_then_resume_is_bit_identical(uninterrupted, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "purejaxppo.cli", "train", *SMALL, *CHUNKS, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    ckpt = out / "checkpoints"
    try:
        while time.time() < deadline:  # wait until a few chunks are done and saved
            steps = [int(p.name) for p in ckpt.iterdir() if p.name.isdigit()] if ckpt.is_dir() else []
            if steps and max(steps) >= 10:
                break
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    rows = read_csv(out / "metrics.csv")
    assert 10 < len(rows) < 61  # streamed while training: header + rows of the chunks done
    killed_at = max(int(p.name) for p in ckpt.iterdir() if p.name.isdigit())
    assert killed_at < 60

    resumed = run_main("train", "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from the checkpoint at update" in resumed.stdout
    assert read_csv(out / "metrics.csv") == read_csv(uninterrupted / "metrics.csv")
    step_a, state_a = final_state(uninterrupted)
    step_b, state_b = final_state(out)
    assert step_a == step_b == 60
    assert_trees_equal(state_a, state_b)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_return"] == json.loads((uninterrupted / "summary.json").read_text())["final_return"]


def test_damaged_latest_checkpoint_falls_back_to_the_previous(uninterrupted, tmp_path):
    out = tmp_path / "damaged"
    shutil.copytree(uninterrupted, out)
    latest = out / "checkpoints" / "60"
    for f in (latest / "state").rglob("*"):
        if f.is_file() and f.parent.name == "d":
            f.write_bytes(b"\x00garbage" * 8)
    (out / "checkpoints" / "62.orbax-checkpoint-tmp-1").mkdir()  # a save that never finished
    (out / "summary.json").unlink()  # killed after its last checkpoint, before the summary
    resumed = run_main("train", "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    warning = [line for line in resumed.stdout.splitlines() if "checkpoint at update 60 is damaged" in line]
    assert len(warning) == 1 and "moved to" in warning[0]
    assert "resuming from the checkpoint at update 58" in resumed.stdout
    moved = glob.glob(str(out / "checkpoints" / "damaged" / "60-*"))
    assert len(moved) == 1 and os.path.isdir(os.path.join(moved[0], "state"))  # kept, not deleted
    assert read_csv(out / "metrics.csv") == read_csv(uninterrupted / "metrics.csv")
    assert_trees_equal(final_state(out)[1], final_state(uninterrupted)[1])


def test_resume_refuses_changed_settings(uninterrupted, capsys):
    code = cli_main(["train", "--out", str(uninterrupted), "--resume", "--lr", "0.1", "--num-envs", "8"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "lr (run: " in err and "now: 0.1)" in err and "num_envs (run: 4, now: 8)" in err
    code = cli_main(["train", "--out", str(uninterrupted), "--resume", "--total-timesteps", "9000"])
    err = capsys.readouterr().err
    assert code == 2 and "--allow-safe-changes" in err
    code = cli_main(["train", "--out", str(uninterrupted), "--resume", "--overwrite"])
    assert code == 2 and "contradict" in capsys.readouterr().err


def test_resume_with_more_steps_continues(uninterrupted, tmp_path):
    out = tmp_path / "longer"
    shutil.copytree(uninterrupted, out)
    done = run_main("train", "--out", str(out), "--resume", "--total-timesteps", str(4 * 32 * 64),
                    "--allow-safe-changes", "--checkpoint-every", "0")
    assert done.returncode == 0, done.stderr
    rows = read_csv(out / "metrics.csv")
    assert len(rows) == 1 + 64
    assert rows[:61] == read_csv(uninterrupted / "metrics.csv")  # the first 60 updates are kept as they were


def test_stop_at_return_ends_the_run_where_it_first_reaches_the_target(uninterrupted, tmp_path):
    rows = read_csv(uninterrupted / "metrics.csv")
    returns = np.array([float(r[rows[0].index("charts/episodic_return")] or "nan") for r in rows[1:]])
    counts = np.array([float(r[rows[0].index("charts/episodes")]) for r in rows[1:]])

    def final_return_after(u):  # the summary's final return of a run that stopped after update u
        k = math.ceil(u / 10)
        r, c = returns[u - k:u], counts[u - k:u]
        return np.sum(np.where(c > 0, r * c, 0.0)) / c.sum() if c.sum() > 0 else np.nan

    # a target the uninterrupted run reaches at a chunk end (chunks of 2 updates) by update 20
    target = float(final_return_after(20)) - 1e-3
    expected = next(u for u in range(2, 61, 2) if final_return_after(u) >= target)
    out = tmp_path / "stopped"
    done = run_main("train", *SMALL, *CHUNKS, "--stop-at-return", repr(target), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert f"reached the target return {target:g} after update {expected}" in done.stdout
    summary = json.load(open(out / "summary.json"))
    assert summary["stopped_at_return"] == {"target": target, "update": expected, "env_steps": expected * 4 * 32}
    assert summary["env_steps"] == expected * 4 * 32 and summary["final_return"] >= target
    assert read_csv(out / "metrics.csv") == rows[:expected + 1]  # the same run up to there
    assert final_state(out)[0] == expected  # a checkpoint at the stop
    again = run_main("train", "--resume", "--out", str(out))
    assert again.returncode == 0 and "already complete (stopped at its target return" in again.stdout
    # a target out of reach continues from the stop to the uninterrupted run's end, the same run
    longer = run_main("train", "--resume", "--stop-at-return", "1e9", "--out", str(out))
    assert longer.returncode == 0, longer.stderr
    assert read_csv(out / "metrics.csv") == rows
    assert json.load(open(out / "summary.json"))["stopped_at_return"] is None
    bad = run_main("train", *SMALL, "--stop-at-return", "nan", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "--stop-at-return: nan is not a finite number" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_resume_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for args, expected in [
        (["train", "--out", str(tmp_path / "nothing"), "--resume"], "no run folder"),
        (["train", "--out", str(tmp_path / "empty"), "--resume"], "not a run folder"),
        (["eval", "--run", str(tmp_path / "empty")], "not a run folder"),
        (["train", "--chunk-updates", "0"], "--chunk-updates"),
    ]:
        code = cli_main(args)
        err = capsys.readouterr().err.strip()
        assert code == 2, args
        assert len(err.splitlines()) == 1 and expected in err, err


def test_tensorboard_and_offline_wandb_hold_the_metrics(uninterrupted, tmp_path, monkeypatch):
    out = tmp_path / "logged"
    monkeypatch.setenv("WANDB_SILENT", "true")
    # the adaptive penalty makes every metric of the schema finite (post_update_kl is NaN without it)
    done = run_main("train", *SMALL, "--kl-penalty", "adaptive", "--chunk-updates", "2", "--checkpoint-every", "0",
                    "--tensorboard", "--wandb", "--out", str(out))
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert tuple(rows[0]) == ("env_steps", *METRIC_NAMES)
    tb = tensorboard_scalars(glob.glob(str(out / "tensorboard" / "events.out.tfevents.*"))[0])
    files = glob.glob(str(out / "wandb" / "offline-run-*" / "run-*.wandb"))
    assert len(files) == 1
    history = wandb_history(files[0])
    assert len(history) == 60
    assert set(tb) == set(METRIC_NAMES)  # every metric reaches every sink
    assert set().union(*history) - {"_step", "_runtime", "_timestamp"} == set(METRIC_NAMES)
    for name in METRIC_NAMES:
        expected = {int(r["env_steps"]): float(r[name]) for r in rows if r[name]}
        got = dict(tb[name])
        logged = {h["_step"]: h[name] for h in history if name in h}
        assert got.keys() == logged.keys() == expected.keys(), name
        for values in (got, logged):
            np.testing.assert_allclose([values[s] for s in sorted(values)], [expected[s] for s in sorted(expected)],
                                       rtol=1e-6, err_msg=name)


def tensorboard_scalars(path):
    """{tag: [(step, value)]} from a TensorBoard event file (TFRecord of Event protos)."""
    from tensorboardX.proto import event_pb2

    data, pos, out = open(path, "rb").read(), 0, {}
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos:pos + 8])
        event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
        pos += 12 + length + 4
        for v in event.summary.value:
            out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out


def wandb_history(path):
    """The history rows of an offline W&B run file (a LevelDB-style log of Record protos)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = open(path, "rb").read()
    assert data[:4] == b":W&B"
    pos, block, buf, records = 7, 32768, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            records.append(chunk)
        elif kind == 2:
            buf = chunk
        elif kind == 3:
            buf += chunk
        elif kind == 4:
            records.append(buf + chunk)
    rows = []
    for raw in records:
        rec = pb.Record.FromString(raw)
        if rec.WhichOneof("record_type") == "history":
            rows.append({"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in rec.history.item})
    return rows


@pytest.mark.parametrize("kwargs, message", [
    (dict(chunk_updates=-1), "chunk_updates: got -1; accepted: an integer >= 1, or None for the default"),
    (dict(chunk_updates=2.5), "chunk_updates: got 2.5; accepted: an integer >= 1"),
    (dict(checkpoint_every=-1), "checkpoint_every: got -1; accepted: an integer >= 0"),
    (dict(keep_checkpoints=0), "keep_checkpoints: got 0; accepted: an integer >= 1"),
    (dict(stop_at_return="x"), "stop_at_return: got 'x'; accepted: a finite return"),
    (dict(stop_at_return=float("nan")), "stop_at_return: got nan; accepted: a finite return"),
    (dict(wandb="offline"), "wandb: got 'offline'; accepted: a dict such as"),
])
def test_bad_run_arguments_are_refused_before_anything_runs(kwargs, message, tmp_path):
    """What the command line checks of its flags, run() checks of its arguments (in one line,
    before anything is compiled or written)."""
    from purejaxppo import ConfigError

    with pytest.raises(ConfigError) as e:
        run(small_config(), str(tmp_path / "r"), log=lambda m: None, **kwargs)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)
    assert not (tmp_path / "r").exists()
