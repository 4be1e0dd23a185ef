"""The notebooks run top to bottom in a real Jupyter kernel (nbclient), at tiny budgets set in
their parameters cell, and print their key results as a JSON line that is checked here.
(rlhf.ipynb runs in tests/test_rlhf.py, whose tests check the study it trains.)"""

import nbformat
import pytest
from helpers import NOTEBOOKS, notebook_stdout, run_notebook

NAMES = ["quickstart.ipynb", "sweeps.ipynb", "reproduce.ipynb", "rlhf.ipynb"]


@pytest.mark.parametrize("name", NAMES)
def test_notebooks_are_stripped_and_colab_ready(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: outputs are not stripped"
    assert "colab.research.google.com/github/purejaxppo/purejaxppo/blob/main/notebooks/" + name in nb.cells[0].source
    setup = nb.cells[1].source
    assert "google.colab" in setup and "pip" in setup and "accelerator" in setup


def test_quickstart(tmp_path):
    out, nb = run_notebook("quickstart.ipynb", "TOTAL_TIMESTEPS = 16 * 128 * 4\nEVAL_EPISODES = 4", tmp_path)
    assert out["updates"] == 4 and out["gif_frames"] >= 2
    assert out["eval_mean"] >= 8  # CartPole: every episode lasts at least 8 steps
    assert (tmp_path / "cartpole.gif").stat().st_size > 0
    assert "accelerator: CPU only; 1 device(s)" in notebook_stdout(nb)


def test_sweeps(tmp_path):
    out, _ = run_notebook("sweeps.ipynb", "TOTAL_TIMESTEPS = 16 * 128 * 2\nSEEDS = 2\nLRS = [1e-3, 2.5e-3]\n"
                          "ENT_COEFS = [0.0]", tmp_path)
    assert out["agents"] == 4 and out["best"]["ent_coef"] == 0.0 and out["best"]["lr"] in (1e-3, 2.5e-3)
    assert out["ci95"][0] <= out["best_mean"] <= out["ci95"][1]


def test_reproduce(tmp_path):
    out, _ = run_notebook("reproduce.ipynb", 'SUITE = "gymnax-classic"\nSEEDS = 2\nTINY = True\n'
                          'TASKS = ["CartPole-v1"]', tmp_path)
    assert out["suite"] == "gymnax-classic" and out["tasks"] == ["CartPole-v1"] and len(out["verdicts"]) == 1
    assert (tmp_path / "results" / "gymnax-classic" / "summary.md").exists()

