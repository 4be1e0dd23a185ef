"""The quick-start notebook runs top to bottom (with a smaller budget)."""

import json
from pathlib import Path

import matplotlib
import numpy as np

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_runs():
    matplotlib.use("Agg", force=True)
    nb = json.loads(NOTEBOOK.read_text())
    source = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert "total_timesteps=300_000" in source
    source = source.replace("total_timesteps=300_000", "total_timesteps=16 * 128 * 4")
    namespace: dict = {}
    exec(compile(source, str(NOTEBOOK), "exec"), namespace)
    assert namespace["ret"].shape == (3, 4, 4)  # [lr, seed, update]
    assert np.isfinite(np.asarray(namespace["metrics"]["losses/value_loss"])).all()
