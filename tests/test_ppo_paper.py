"""purejaxppo reproduce ppo-paper: the plumbing at a tiny budget (CartPole stands in for a Brax task), the
last-100-episodes score and the per-task normalisation against hand-worked numbers."""

import csv
import json
import os

import numpy as np
import pytest

from purejaxppo.cli import main
from purejaxppo.run import ppo_paper


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("paper") / "ppo-paper")
    rc = main(["reproduce", "ppo-paper", "--tiny", "--task", "CartPole-v1", "--seeds", "2", "--out", out,
               "--compilation-cache", "off"])
    assert rc == 0
    return out


def test_tiny_run_writes_table_1_and_figure_3(tiny_run):
    assert sorted(os.listdir(tiny_run)) == sorted(ppo_paper.RESULT_FILES)
    with open(os.path.join(tiny_run, "results.csv")) as f:
        rows = list(csv.DictReader(f))
    labels = [s.label for s in ppo_paper.SETTINGS] + [ppo_paper.TRPO]
    assert sorted({(r["setting"], r["seed"]) for r in rows}) == sorted((label, s) for label in labels for s in "01")
    # normalised = (score - random) / (best setting's mean - random), recomputed from the csv
    means = {label: np.mean([float(r["last100_return"]) for r in rows if r["setting"] == label]) for label in labels}
    best = max(means[s.label] for s in ppo_paper.SETTINGS)
    for r in rows:
        expected = (float(r["last100_return"]) - float(r["random_return"])) / (best - float(r["random_return"]))
        assert float(r["normalised"]) == pytest.approx(expected, rel=1e-4, abs=1e-5)
    with open(os.path.join(tiny_run, "meta.json")) as f:
        meta = json.load(f)
    assert meta["tiny"] and meta["label"].startswith("smaller protocol: 1 of 7 tasks") and len(meta["rows"]) == 12
    with open(os.path.join(tiny_run, "summary.md")) as f:
        summary = f.read()
    assert "| clipping, eps = 0.2 | 0.82 |" in summary and "| no clipping or penalty | -0.39 |" in summary
    assert "Command: `purejaxppo reproduce ppo-paper" in summary and "figure3.png" in summary
    assert meta["env_steps"] == 128 and "128 env steps per run" in summary


def test_results_are_kept_unless_overwrite(tiny_run, capsys):
    assert main(["reproduce", "ppo-paper", "--tiny", "--task", "CartPole-v1", "--out", tiny_run]) != 0
    assert "already holds a suite's results" in capsys.readouterr().err


def test_last_episodes_mean_weights_updates_by_their_episodes():
    returns = np.array([10.0, np.nan, 20.0, 30.0])
    counts = np.array([50, 0, 60, 50])
    # the last 100 episodes: 50 at 30, 50 of the 60 at 20
    assert ppo_paper.last_episodes_mean(returns, counts) == pytest.approx(25.0)
    assert ppo_paper.last_episodes_mean(returns, counts, n=1000) == pytest.approx((500 + 1200 + 1500) / 160)
    assert np.isnan(ppo_paper.last_episodes_mean(np.array([np.nan]), np.array([0])))


def test_task_names_pick_a_backend():
    assert ppo_paper.task_env("hopper", "mjx") == "brax/hopper-mjx"
    assert ppo_paper.task_env("hopper-generalized", "mjx") == "brax/hopper-generalized"
    assert ppo_paper.task_env("CartPole-v1", "mjx") == "CartPole-v1"
