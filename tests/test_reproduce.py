"""Reproduction suites (purejaxppo reproduce): the plumbing at a tiny budget, through the real CLI in-process.

Every suite runs with some of its tasks (gymnax-classic through its notebook, tests/test_notebook.py) (each task is three compiled programs: training,
evaluation and the random policy). The numbers of a tiny budget mean nothing; the files,
their columns, the verdict logic and the one-line errors are checked.
"""

import csv
import json
import os

import numpy as np
import pytest

from purejaxppo.cli import main
from purejaxppo.core.presets import PRESETS
from purejaxppo.run.reproduce import SUITES, Task, rewrite_summary, verdict


@pytest.fixture(scope="module")
def bsuite_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("rep") / "bsuite")
    rc = main(["reproduce", "bsuite", "--tiny", "--seeds", "3", "--task", "DiscountingChain-bsuite", "--out", out,
               "--compilation-cache", "off"])
    assert rc == 0
    return out


def test_every_task_of_every_suite_has_a_preset():
    for suite in SUITES.values():
        for task in suite.tasks:
            assert task.env in PRESETS, task.env
    pendulum = next(t for t in SUITES["gymnax-classic"].tasks if t.env == "Pendulum-v1")
    assert (pendulum.published, pendulum.goal, pendulum.reference) == (-130.0, -145.0, -138.0)


def test_tiny_suite_writes_every_file(bsuite_run):
    assert sorted(os.listdir(bsuite_run)) == ["curves.png", "meta.json", "profile.png", "results.csv", "summary.md"]
    with open(os.path.join(bsuite_run, "results.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [(r["task"], r["seed"]) for r in rows] == [("DiscountingChain-bsuite", str(s)) for s in range(3)]
    assert all(int(r["env_steps"]) == 4 * 16 * 2 for r in rows)
    meta = json.load(open(os.path.join(bsuite_run, "meta.json")))
    assert meta["suite"] == "bsuite" and meta["seeds"] == 3 and meta["tiny"] is True
    assert meta["command"].startswith("purejaxppo reproduce")
    for key in ("commit", "versions", "device", "python"):
        assert key in meta["environment"]
    for t, task in zip(meta["tasks"], ("DiscountingChain-bsuite",), strict=True):
        assert t["task"] == task and 0 <= t["solved"] <= 3
        assert t["ci95"][0] <= t["mean"] <= t["ci95"][1]
        per_seed = [float(r["eval_return"]) for r in rows if r["task"] == task]
        assert t["mean"] == pytest.approx(np.mean(per_seed), rel=1e-5)
    # normalised = (eval - random) / (optimum - random), recomputed from the csv
    for r in rows:
        optimum = 1.1  # DiscountingChain's optimum
        expected = (float(r["eval_return"]) - float(r["random_return"])) / (optimum - float(r["random_return"]))
        assert float(r["normalised"]) == pytest.approx(expected, rel=1e-4, abs=1e-5)
    summary = open(os.path.join(bsuite_run, "summary.md")).read()
    assert "tiny budget" in summary and "| DiscountingChain-bsuite |" in summary and "IQM" in summary
    assert "Protocol: 262,144 env steps per task" in summary and "this run used the tiny budget instead" in summary
    assert "seeds solved" in summary


# (the classic suite runs tiny in tests/test_notebook.py, through its notebook)
@pytest.mark.parametrize("suite, task", [("minatar", "Breakout-MinAtar")])
def test_other_suites_run_tiny(tmp_path, suite, task, capsys):
    out = str(tmp_path / suite)
    assert main(["reproduce", suite, "--tiny", "--seeds", "2", "--task", task, "--out", out,
                 "--compilation-cache", "off"]) == 0
    summary = open(os.path.join(out, "summary.md")).read()
    assert f"| {task} |" in summary
    assert "results in" in capsys.readouterr().out


def test_a_panel_without_a_finished_episode_says_so():
    from purejaxppo.run.reproduce import empty_curve_note

    steps = np.array([1024, 2048])
    note = empty_curve_note(np.full((3, 2), np.nan), steps)
    assert "no episode ended" in note and "2,048 env steps" in note and "--tiny" not in note
    assert "a --tiny budget is too small to learn" in empty_curve_note(np.full((3, 2), np.nan), steps, tiny=True)
    assert empty_curve_note(np.array([[np.nan, 1.0], [np.nan, np.nan]]), steps) is None  # one point is drawn


def test_verdicts_by_hand():
    t = Task("X", 10.0)
    assert verdict(t, 10.0, 9.0, 11.0) == "met"
    assert verdict(t, 12.0, 10.5, 13.0) == "above published"
    assert verdict(t, 8.0, 7.0, 9.0) == "not met (2 below)"
    assert verdict(t, 9.5, 9.0, 10.2) == "not met on the mean (0.5 below; the 95% interval reaches it)"
    p = Task("P", -130.0, target=-145.0)
    assert verdict(p, -140.0, -150.0, -130.0) == "met"
    assert verdict(p, -150.0, -160.0, -146.0) == "not met (5 below)"
    assert verdict(p, -144.0, -143.0, -140.0) == "above target"


def test_rewrite_summary_recomputes_verdicts(bsuite_run):
    meta_path = os.path.join(bsuite_run, "meta.json")
    meta = json.load(open(meta_path))
    before = open(os.path.join(bsuite_run, "summary.md")).read()
    meta["tasks"][0]["verdict"] = "stale"
    json.dump(meta, open(meta_path, "w"))
    rewrite_summary(bsuite_run)
    assert json.load(open(meta_path))["tasks"][0]["verdict"] != "stale"
    assert open(os.path.join(bsuite_run, "summary.md")).read() == before


@pytest.mark.parametrize("argv, message", [
    (["reproduce"], "name a suite (gymnax-classic, bsuite, minatar, craftax, ppo-paper) or give --list"),
    (["reproduce", "atari"], "unknown suite 'atari'; accepted: gymnax-classic, bsuite, minatar"),
    (["reproduce", "bsuite", "--task", "CartPole-v1"], "CartPole-v1 not in suite bsuite; accepted:"),
    (["reproduce", "bsuite", "--seeds", "0"], "--seeds: must be at least 1, got 0"),
])
def test_bad_reproduce_input_is_one_line(argv, message, capsys, tmp_path):
    rc = main([*argv, "--out", str(tmp_path / "x")] if len(argv) > 1 else argv)
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1, err


def test_list(capsys):
    assert main(["reproduce", "--list"]) == 0
    out = capsys.readouterr().out
    assert "minatar (sized for an accelerator): Asterix-MinAtar 15" in out and "bsuite: Catch-bsuite 1" in out
    assert main(["reproduce", "--list", "bsuite"]) == 0
    [line] = capsys.readouterr().out.strip().splitlines()
    assert line.startswith("bsuite: Catch-bsuite 1")


def test_results_already_there_are_kept_without_overwrite(bsuite_run, capsys):
    """A second run into a suite's folder (by default the committed results/SUITE) is refused
    before anything trains, and every file is kept."""
    before = {name: open(os.path.join(bsuite_run, name), "rb").read() for name in os.listdir(bsuite_run)}
    rc = main(["reproduce", "bsuite", "--tiny", "--task", "Catch-bsuite", "--out", bsuite_run, "--compilation-cache",
               "off"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert (f"{bsuite_run} already holds a suite's results (results.csv, meta.json, summary.md, curves.png, "
            "profile.png); pass --overwrite to replace them, or --out DIR to write elsewhere") in err
    assert {name: open(os.path.join(bsuite_run, name), "rb").read() for name in os.listdir(bsuite_run)} == before


def test_a_tiny_run_without_out_writes_to_scratch(tmp_path, monkeypatch, capsys):
    """``--tiny`` without ``--out`` never writes over the committed results: it makes a new
    runs/reproduce_SUITE_tiny_TIME folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results" / "bsuite").mkdir(parents=True)
    (tmp_path / "results" / "bsuite" / "results.csv").write_text("committed\n")
    rc = main(["reproduce", "bsuite", "--tiny", "--seeds", "1", "--task", "DiscountingChain-bsuite"])
    assert rc == 0, capsys.readouterr().err
    [made] = os.listdir(tmp_path / "runs")
    assert made.startswith("reproduce_bsuite_tiny_") and (tmp_path / "runs" / made / "summary.md").exists()
    assert (tmp_path / "results" / "bsuite" / "results.csv").read_text() == "committed\n"
