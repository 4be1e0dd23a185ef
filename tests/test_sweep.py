"""Sweeps: many agents in one program, equal to individual runs, sharded over fake devices."""

import csv
import json
import os

import jax
import numpy as np
import pytest
from helpers import program_reads, run_main

from purejaxppo import ConfigError, HParams, PPOConfig, make_train, make_trainer, sweep
from purejaxppo.scale import plan as sw
from purejaxppo.scale.stats import bootstrap_ci
from purejaxppo.scale.sweep import run_plan

SMALL = PPOConfig(env="CartPole-v1", num_envs=4, num_steps=32, num_minibatches=2, update_epochs=2, total_timesteps=4 * 32 * 6)


@pytest.fixture(scope="module")
def grid_run():
    """One sweep of 4 settings x 2 seeds, shared; counts how often the program is traced."""
    traces = []
    trainer = make_trainer(SMALL)

    def train(key, hp):
        traces.append(1)
        return trainer.train(key, hp)

    plan = sw.make_plan(SMALL, num_seeds=2, grid={"lr": [1e-3, 3e-3], "clip_eps": [0.1, 0.3]})
    return run_plan(trainer._replace(train=train), plan), traces


@pytest.fixture(scope="module")
def grid_result(grid_run):
    return grid_run[0]


def test_sweep_shapes(grid_result):
    r = grid_result
    assert len(r.settings) == 4
    assert {tuple(sorted(s.items())) for s in r.settings} == {
        (("clip_eps", c), ("lr", lr)) for lr in (1e-3, 3e-3) for c in (0.1, 0.3)
    }
    assert r.metrics["charts/episodic_return"].shape == (4, 2, SMALL.num_updates)
    assert r.final_return.shape == (4, 2) and r.auc.shape == (4, 2)


def test_sweep_agents_equal_individual_runs(grid_result):
    r = grid_result
    train = jax.jit(make_train(SMALL))
    for g in (0, 3):
        hp = HParams.from_config(SMALL.replace(**r.settings[g]))
        for s in range(2):
            _, single = train(r.keys[s], hp)
            for name in ("charts/episodic_return", "losses/value_loss", "losses/approx_kl"):
                np.testing.assert_allclose(r.metrics[name][g, s], np.asarray(single[name]), rtol=2e-4, atol=1e-5, err_msg=name)


def test_chunked_sweep_equals_the_fused_sweep(grid_result):
    """What the command line runs (init, then chunks of 3 updates, with a progress callback)
    gives the fused program's numbers."""
    trainer = make_trainer(SMALL)
    plan = sw.make_plan(SMALL, num_seeds=2, grid={"lr": [1e-3, 3e-3], "clip_eps": [0.1, 0.3]})
    done = []
    chunked = run_plan(trainer, plan, chunk_updates=3, on_chunk=done.append)
    assert done == [3, 6]
    for name, values in grid_result.metrics.items():
        np.testing.assert_array_equal(chunked.metrics[name], values, err_msg=name)


def test_sweep_compiles_once(grid_run):
    result, traces = grid_run
    assert result.final_return.shape == (4, 2)
    assert len(traces) == 1  # eight agents, one trace of train, one program


def test_a_library_sweep_saves_and_loads_its_program(grid_result, tmp_path, monkeypatch):
    """``sweep(..., program_cache=DIR)``: the first call saves the fused program, the second loads
    it; both give the numbers of the sweep compiled the usual way, bit for bit."""
    found = program_reads(monkeypatch)
    grid = {"lr": [1e-3, 3e-3], "clip_eps": [0.1, 0.3]}
    first = sweep(SMALL, num_seeds=2, grid=grid, program_cache=str(tmp_path))
    second = sweep(SMALL, num_seeds=2, grid=grid, program_cache=str(tmp_path))
    assert found == [False, True]
    assert len(os.listdir(tmp_path)) == 1
    for name, values in grid_result.metrics.items():
        np.testing.assert_array_equal(first.metrics[name], values, err_msg=name)
        np.testing.assert_array_equal(second.metrics[name], values, err_msg=name)


def test_numpy_values_are_accepted_as_the_command_line_values_are():
    a = sw.make_plan(SMALL, samples={"ent_coef": sw.Distribution("choice", np.array([0.0, 0.01]))},
                     num_samples=np.int64(3), grid={"lr": np.array([1e-3, 3e-4], np.float32)})
    b = sw.make_plan(SMALL, samples={"ent_coef": sw.Distribution("choice", (0.0, 0.01))}, num_samples=3,
                     grid={"lr": [1e-3, 3e-4]})
    assert len(a.settings) == 6 and all(type(v) is float for setting in a.settings for v in setting.values())
    np.testing.assert_allclose([s["lr"] for s in a.settings], [s["lr"] for s in b.settings], rtol=1e-7)
    assert [s["ent_coef"] for s in a.settings] == [s["ent_coef"] for s in b.settings]


def test_random_search_is_reproducible_and_in_bounds():
    samples = {
        "lr": sw.Distribution("log-uniform", (1e-4, 1e-2)),
        "gamma": sw.Distribution("uniform", (0.9, 0.999)),
        "ent_coef": sw.Distribution("choice", (0.0, 0.01)),
    }
    a = sw.make_settings(None, samples, 50, jax.random.key(1))
    b = sw.make_settings(None, samples, 50, jax.random.key(1))
    c = sw.make_settings(None, samples, 50, jax.random.key(2))
    assert a == b and a != c and len(a) == 50
    lrs = np.array([s["lr"] for s in a])
    assert lrs.min() >= 1e-4 and lrs.max() <= 1e-2
    assert np.mean(lrs < 1e-3) > 0.3  # log-uniform: about half the draws below the geometric middle
    assert all(0.9 <= s["gamma"] <= 0.999 for s in a)
    assert {s["ent_coef"] for s in a} == {0.0, 0.01}
    # grid x samples: every grid point gets every draw
    both = sw.make_settings({"clip_eps": [0.1, 0.2]}, {"lr": samples["lr"]}, 3, jax.random.key(1))
    assert len(both) == 6 and [s["clip_eps"] for s in both] == [0.1] * 3 + [0.2] * 3


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: sw.make_plan(SMALL, grid={"num_envs": [4, 8]}), "grid: num_envs is a static setting"),
        (lambda: sw.make_plan(SMALL, grid={"lrr": [1, 2]}), "grid: lrr is not a config field"),
        (lambda: sw.make_plan(SMALL, samples={"num_steps": sw.Distribution("choice", (1, 2))}, num_samples=2),
         "sample: num_steps is a static setting"),
        (lambda: sw.make_plan(SMALL, num_seeds=0), "num_seeds: got 0"),
        (lambda: sw.make_plan(SMALL, samples={"gamma": sw.Distribution("uniform", (0.9, 1.5))}, num_samples=20),
         "gamma: got 1."),
        (lambda: sw.parse_grid("lr=fast,1e-3"), "value 'fast' is not a number"),
        (lambda: sw.parse_grid("lr="), "empty list"),
        (lambda: sw.parse_sample("lr=normal:0:1"), "distribution 'normal'"),
        (lambda: sw.parse_sample("lr=log-uniform:0:1"), "LOW > 0"),
        (lambda: sw.parse_sample("lr=uniform:1e-2:1e-4"), "LOW < HIGH"),
        (lambda: sweep(SMALL, grid={"gamma": [0.9, 1.5]}), "gamma: got 1.5"),
        # a range is checked at its ends, whatever the draws (1.05 is rarely drawn from one sample)
        (lambda: sw.make_plan(SMALL, samples={"gamma": sw.Distribution("uniform", (0.9, 1.05))}, num_samples=1),
         "sample: gamma=uniform:0.9:1.05 can draw a value gamma does not accept: gamma: got 1.05; accepted: a number "
         "in [0, 1]"),
        (lambda: sw.make_plan(SMALL, samples={"ent_coef": sw.Distribution("choice", (0.0, -1.0))}, num_samples=1),
         "can draw a value ent_coef does not accept: ent_coef: got -1.0"),
        (lambda: sw.parse_grid("lr=1e-3,,2e-3"), "grid: lr=1e-3,,2e-3 has an empty value"),
        (lambda: sw.parse_grid("lr=1e-3,"), "has an empty value"),
        (lambda: sw.parse_sample("ent_coef=choice:0,,0.01"), "needs numbers"),
        # the Python API checks what the command line's parsing checks
        (lambda: sweep(SMALL, grid={"lr": []}), "grid: lr has an empty list of values; accepted: a list of numbers"),
        (lambda: sweep(SMALL, grid={"lr": "abc"}), "grid: lr: got 'abc'; accepted: a list of numbers"),
        (lambda: sweep(SMALL, samples={"lr": sw.Distribution("normal", (0, 1))}, num_samples=2),
         "sample: lr has distribution 'normal'; accepted: Distribution(KIND, VALUES) with KIND one of uniform, "
         "log-uniform, choice"),
        (lambda: sweep(SMALL, samples={"lr": sw.Distribution("uniform", (1e-3,))}, num_samples=2),
         "sample: lr=uniform:0.001 needs LOW < HIGH"),
        (lambda: sweep(SMALL, samples={"lr": sw.Distribution("log-uniform", (0.0, 1e-3))}, num_samples=2),
         "needs LOW > 0"),
        (lambda: sweep(SMALL, samples={"lr": sw.Distribution("uniform", ("a", "b"))}, num_samples=2),
         "are not numbers"),
        (lambda: sweep(SMALL, num_samples=3), "num_samples: got 3 without samples to draw from"),
        (lambda: sweep(SMALL, num_samples=np.int64(3)), "num_samples: got 3 without samples to draw from"),
        (lambda: sweep(SMALL, samples={"lr": sw.Distribution("uniform", (1e-4, 1e-3))}, num_samples=1.5),
         "num_samples: got 1.5; accepted: 0, or a positive number"),
        (lambda: sweep(SMALL, samples={"lr": sw.Distribution("uniform", (1e-4, 1e-3))}), "num_samples: got 0"),
    ],
)
def test_bad_sweep_specs(call, message):
    with pytest.raises(ConfigError) as e:
        call()
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_bootstrap_ci():
    lo, hi = bootstrap_ci(np.array([1.0, 2.0, 3.0, 4.0]))
    assert 1.0 <= lo < 2.5 < hi <= 4.0
    assert bootstrap_ci(np.array([5.0])) == (5.0, 5.0)


def run_cli(*args):
    """The sweep command, run in this process with its output captured."""
    return run_main(*args)


TINY = ["--total-timesteps", "768", "--num-envs", "4", "--num-steps", "32", "--num-minibatches", "2", "--update-epochs", "1"]


def test_sweep_cli_writes_results(tmp_path):
    out = tmp_path / "sweep"
    proc = run_cli("sweep", *TINY, "--num-seeds", "2", "--grid", "lr=1e-3,3e-3", "--sample", "ent-coef=choice:0,0.01",
                   "--num-samples", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "final return" in proc.stdout and "95% CI" in proc.stdout
    assert sorted(os.listdir(out)) == [".purejaxppo.lock", "agents", "checkpoints", "config.json", "curves.png",
                                       "metrics.npz", "results.csv", "summary.csv"]
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 2 * 2  # 2 grid values x 2 samples x 2 seeds
    assert {"lr", "ent_coef", "seed", "final_return", "auc"} <= set(rows[0])
    with open(out / "summary.csv") as f:
        summary = list(csv.DictReader(f))
    assert len(summary) == 4 and [int(r["rank"]) for r in summary] == [1, 2, 3, 4]
    means = [float(r["mean_final_return"]) for r in summary]
    assert means == sorted(means, reverse=True)
    assert all(float(r["ci95_low"]) <= float(r["mean_final_return"]) <= float(r["ci95_high"]) for r in summary)
    npz = np.load(out / "metrics.npz")
    assert npz["charts__episodic_return"].shape == (4, 2, 6)
    assert json.loads((out / "config.json").read_text())["sweep"]["num_seeds"] == 2
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--grid", "num_envs=4,8"], "num_envs is a static setting"),
        (["--grid", "lr=a,b"], "is not a number"),
        (["--grid", "lr="], "empty list"),
        (["--sample", "lr=gauss:1:2", "--num-samples", "2"], "distribution 'gauss'"),
        (["--sample", "lr=uniform:1e-4:1e-2"], "--num-samples"),
        (["--grid", "lr=1e-3,,3e-3"], "grid: lr=1e-3,,3e-3 has an empty value"),
        (["--sample", "lrr=choice:1e-3", "--num-samples", "2"], "sample: lrr is not a config field; fields that can"),
        (["--sample", "num_envs=choice:4,8", "--num-samples", "2"], "sample: num_envs is a static setting"),
        (["--grid", "lr=1e-3", "--compilation-cache", "{tmp}/afile"], "afile: it exists and is not a folder"),
        (["--sample", "gamma=uniform:0.9:1.05", "--num-samples", "1"], "gamma: got 1.05; accepted: a number in [0, 1]"),
    ],
)
def test_sweep_cli_bad_input(args, expected, tmp_path):
    (tmp_path / "afile").write_text("")
    proc = run_cli("sweep", *TINY, *[a.format(tmp=tmp_path) for a in args], "--out", str(tmp_path / "s"))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("purejaxppo sweep: error:") and expected in lines[0], proc.stderr
    assert not (tmp_path / "s").exists()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SWEEP_ARGS = ["--env", "CartPole-v1", "--preset", "none", "--num-envs", "4", "--num-steps", "32",
              "--num-minibatches", "2", "--update-epochs", "2", "--total-timesteps", str(4 * 32 * 6),
              "--num-seeds", "3", "--grid", "lr=0.001,0.003"]


def test_two_processes_on_localhost_equal_one_process(tmp_path):
    import subprocess
    import sys

    port = _free_port()
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "purejaxppo.cli", "sweep", *SWEEP_ARGS, "--out", str(tmp_path / f"p{i}"),
             "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i),
             "--coordinator-timeout", "120"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        for i in range(2)
    ]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=400))
    finally:
        for p in procs:
            p.kill()
    for p, (stdout, stderr) in zip(procs, outs):
        assert p.returncode == 0, stderr[-3000:]
    assert "on 2 cpu device(s) in 2 processes" in outs[0][0]
    assert (tmp_path / "p0" / "results.csv").exists() and not (tmp_path / "p1").exists()  # only process 0 writes
    assert "process 0 writes the results" in outs[1][0]

    done = run_cli("sweep", *SWEEP_ARGS, "--out", str(tmp_path / "one"))
    assert done.returncode == 0, done.stderr
    two = list(csv.DictReader(open(tmp_path / "p0" / "results.csv")))
    one = list(csv.DictReader(open(tmp_path / "one" / "results.csv")))
    assert len(two) == len(one) == 6
    for a, b in zip(two, one):
        assert a["lr"] == b["lr"] and a["seed"] == b["seed"]
        for col in ("final_return", "auc"):
            np.testing.assert_allclose(float(a[col]), float(b[col]), rtol=1e-6, err_msg=col)


def _sweep_process(tmp_path, port, process_id, num_processes, timeout=5, extra=()):
    import subprocess
    import sys

    return subprocess.Popen(
        [sys.executable, "-m", "purejaxppo.cli", "sweep", *SWEEP_ARGS, "--out", str(tmp_path / f"x{process_id}"),
         "--coordinator", f"127.0.0.1:{port}", "--num-processes", str(num_processes), "--process-id",
         str(process_id), "--coordinator-timeout", str(timeout), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )


def _error_line(proc) -> str:
    try:
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 2, stderr[-2000:]
    assert "Traceback" not in stderr and "Check failure" not in stderr, stderr[-2000:]
    return stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("alone", [1, 0])
def test_missing_processes_fail_in_time(tmp_path, alone):
    """A process without its peers stops with one line within the timeout (JAX itself would abort)."""
    import time

    t0 = time.time()
    port = _free_port()
    last = _error_line(_sweep_process(tmp_path, port, alone, 2))
    if alone == 1:  # no coordinator at all
        assert last == (f"purejaxppo sweep: error: process 1 of 2 could not join the coordinator at 127.0.0.1:{port} "
                        "within 5 s (nothing accepts connections there); check --coordinator and that process 0 is "
                        "running")
    else:  # the coordinator waits for a peer that never comes
        assert last == (f"purejaxppo sweep: error: process 0 of 2 waited 5 s at 127.0.0.1:{port} for the other "
                        "processes, which did not all come; start every process with the same --coordinator and "
                        "--num-processes, or raise --coordinator-timeout")
    assert time.time() - t0 < 100
    assert not (tmp_path / f"x{alone}").exists()


def test_mismatched_process_counts_are_refused(tmp_path):
    port = _free_port()
    coordinator = _sweep_process(tmp_path, port, 0, 2, timeout=30)
    peer = _sweep_process(tmp_path, port, 1, 3, timeout=30)
    expected = ("purejaxppo sweep: error: process 1 was started with --num-processes 3, process 0 with 2; start "
                "every process with the same --num-processes")
    assert _error_line(peer) == expected and _error_line(coordinator) == expected
    assert not (tmp_path / "x0").exists() and not (tmp_path / "x1").exists()


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--seed", "1"], "process 1 runs a different sweep than process 0 (sweep fingerprint {fp}, process 0's {fp}): "
                          "its config field seed is 1, process 0's 0; start every process with the same command"),
        (["--grid", "lr=x"], "process 1 stopped before its sweep began; its own error says why"),
    ],
    ids=["another-seed", "a-process-stopped"],
)
def test_processes_running_different_sweeps_are_refused(tmp_path, extra, expected):
    """Each process checks, once joined, that all run the same sweep; every one stops with one line
    (also when one of them stopped on its own command line), and nothing is written."""
    import re

    port = _free_port()
    coordinator = _sweep_process(tmp_path, port, 0, 2, timeout=30)
    peer = _sweep_process(tmp_path, port, 1, 2, timeout=30, extra=extra)
    first, second = _error_line(coordinator), _error_line(peer)
    pattern = re.escape("purejaxppo sweep: error: " + expected).replace(re.escape("{fp}"), "[0-9a-f]{16}")
    assert re.fullmatch(pattern, first), first
    if extra[0] == "--seed":
        assert second == first
    else:  # the process with the mistake names it
        assert second == "purejaxppo sweep: error: grid: lr value 'x' is not a number; accepted: numbers like 3e-4"
    assert not (tmp_path / "x0").exists() and not (tmp_path / "x1").exists()


NO_CLUSTER = lambda: None  # noqa: E731
SLURM_OF_4 = lambda: ("SlurmCluster", 4)  # noqa: E731


@pytest.mark.parametrize(
    "flags, env, cluster, expected",
    [
        ((None, None, None), {}, NO_CLUSTER, None),
        ((None, None, None), {"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}, NO_CLUSTER, None),  # not JAX's names
        ((None, None, None), {}, SLURM_OF_4, (None, None, None)),  # JAX detects all three
        ((None, None, None), {}, lambda: ("SlurmCluster", 1), None),  # a job of one process runs alone
        (("10.0.0.1:1234", 4, 2), {}, NO_CLUSTER, ("10.0.0.1:1234", 4, 2)),
        ((None, 2, 1), {"JAX_COORDINATOR_ADDRESS": "h:9"}, NO_CLUSTER, (None, 2, 1)),  # JAX reads its variable
        ((None, 8, None), {}, SLURM_OF_4, (None, 8, None)),  # a flag overrides what the cluster says
        ((None, None, None), {"JAX_COORDINATOR_ADDRESS": "h:9"}, NO_CLUSTER,
         "--num-processes and --process-id missing: no SLURM, Open MPI, Kubernetes or Cloud TPU cluster"),
        (("h:9", 2, None), {}, NO_CLUSTER, "--process-id missing"),
        (("nohost", 2, 0), {}, NO_CLUSTER, "--coordinator: 'nohost' is not HOST:PORT"),
        ((None, 2, 0), {"JAX_COORDINATOR_ADDRESS": "h"}, NO_CLUSTER, "JAX_COORDINATOR_ADDRESS .read by JAX.: 'h'"),
        (("h:9", 2, 2), {}, NO_CLUSTER, "--process-id: 2; accepted: 0 to 1"),
        (("h:9", 0, 0), {}, NO_CLUSTER, "--num-processes: 0; accepted: an integer >= 1"),
        ((None, None, -1), {}, SLURM_OF_4, "--process-id: -1; accepted: an integer >= 0"),
    ],
)
def test_process_settings(flags, env, cluster, expected):
    """Flags -> what jax.distributed.initialize is given (None: JAX finds it from its variable or the cluster)."""
    from purejaxppo.scale.distributed import DistributedError, resolve

    if isinstance(expected, str):
        with pytest.raises(DistributedError, match=expected):
            resolve(*flags, environ=env, detect=cluster)
    else:
        got = resolve(*flags, environ=env, detect=cluster)
        assert (tuple(got) if got else None) == expected


def test_timed_out_messages_and_a_taken_port():
    """What a process says when the others never come, and process 0's check of its port (JAX's
    service would crash on a taken one)."""
    import socket

    from purejaxppo.scale.distributed import DistributedError, ProcessSettings, check_port_free, timed_out

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert "reached the coordinator at" in timed_out(ProcessSettings(f"127.0.0.1:{port}", 3, 2), 7)
        with pytest.raises(DistributedError, match=f"process 0 cannot listen on port {port} of the coordinator "
                                                   f"127.0.0.1:{port} .*; choose a free port"):
            check_port_free(ProcessSettings(f"127.0.0.1:{port}", 2, 0))
    check_port_free(ProcessSettings(f"127.0.0.1:{port}", 2, 1))  # only process 0 listens
    assert "within 7 s (nothing accepts connections there)" in timed_out(ProcessSettings(f"127.0.0.1:{port}", 3, 2), 7)
    assert timed_out(ProcessSettings(None, None, None), 7).startswith(
        "this process and the other processes of the SLURM, Open MPI, Kubernetes or Cloud TPU job did not all join")


def test_describe_mismatch():
    from purejaxppo.scale.distributed import describe_mismatch

    base = {"--num-processes": 3, "config": {"lr": 0.1, "seed": 0}, "settings": [{"lr": 0.1}], "--num-seeds": 2}
    prints = ["a" * 16, "b" * 16, "c" * 16]
    assert describe_mismatch([base, base, dict(base, **{"--num-seeds": 4})], prints) == (
        "process 2 runs a different sweep than process 0 (sweep fingerprint cccccccccccccccc, process 0's "
        "aaaaaaaaaaaaaaaa): its --num-seeds is 4, process 0's 2; start every process with the same command")
    assert "its --grid/--sample settings differ" in describe_mismatch([base, dict(base, settings=[])], prints)
    assert "its config field lr is 0.3, process 0's 0.1" in describe_mismatch(
        [base, dict(base, config={"lr": 0.3, "seed": 0})], prints)
    assert describe_mismatch([None, base], prints) == "process 0 stopped before its sweep began; its own error says why"
