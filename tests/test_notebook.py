"""The notebooks run top to bottom in a real Jupyter kernel (nbclient), at tiny budgets set in
their parameters cell, and print their key results as a JSON line that is checked here."""

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ["quickstart.ipynb", "sweeps.ipynb", "reproduce.ipynb", "rlhf.ipynb"]


def run_notebook(name: str, parameters: str, cwd: Path) -> tuple[dict, nbformat.NotebookNode]:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{name}: one cell tagged 'parameters'"
    cells[0].source = parameters
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    last = [c for c in nb.cells if c.cell_type == "code"][-1]
    text = "".join(o.get("text", "") for o in last.outputs if o.output_type == "stream")
    return json.loads(text.strip().splitlines()[-1]), nb


def _stdout(nb: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                   if o.output_type == "stream")


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
    assert "accelerator: CPU only; 1 device(s)" in _stdout(nb)


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


def test_rlhf(tmp_path):
    # the plumbing at the smallest sizes (4-token responses, a few steps); the numbers are tests/test_rlhf.py's
    out, nb = run_notebook("rlhf.ipynb", 'OUT = "study"\nLENGTH = 4\nSFT_STEPS = 100\nPAIRS = 512\n'
                           "PPO_ITERATIONS = 10\nPPO_BATCH = 32\nDPO_EPOCHS = 1", tmp_path)
    assert out["reference"]["kl"] == 0.0 and abs(out["reference"]["win_rate"] - 0.5) < 1e-4
    assert all(k <= b + 1e-4 for k, b in zip(out["bon_kl"], out["bon_bound"], strict=True))
    assert out["ppo_adaptive"]["kl"] > 0 and out["checks"] >= 15
    assert (tmp_path / "study" / "frontier.png").stat().st_size > 0
    assert "1,296 responses per prompt" in _stdout(nb)
