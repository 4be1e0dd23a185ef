"""Start-up: gymnax's plotting libraries are imported only when used; importing the command line leaves JAX
uninitialised."""

import subprocess
import sys

CHECK = """
import sys
import purejaxppo.envs
from purejaxppo.envs import make_env
make_env("CartPole-v1")
assert "scipy.stats" not in sys.modules
for name in ("seaborn", "matplotlib.pyplot"):  # stand-ins, not the real modules
    assert type(sys.modules[name]).__name__ == "_Deferred", name
import gymnax.environments.misc.pong as pong
palette = pong.sns.color_palette("cubehelix", 3)           # first use: the real seaborn is imported
assert len(palette) == 3 and "scipy.stats" in sys.modules
import matplotlib
matplotlib.use("Agg", force=True)
import matplotlib.pyplot as plt
fig, ax = plt.subplots()
ax.plot([0, 1])
assert type(sys.modules["matplotlib.pyplot"]).__name__ == "module"
print("ok")
"""


def test_plotting_libraries_load_at_first_use():
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


BACKEND = """
from jax._src import xla_bridge
import purejaxppo.cli, purejaxppo.core.presets, purejaxppo.run.results, purejaxppo.run.render
assert not xla_bridge._backends, "a JAX backend was initialised at import"
print("ok")
"""


def test_the_command_line_imports_without_initialising_jax():
    """A multi-process run joins its coordinator after the command line is imported and parsed, and
    jax.distributed.initialize() refuses once a backend exists (gymnax creates arrays at import)."""
    done = subprocess.run([sys.executable, "-c", BACKEND], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"
