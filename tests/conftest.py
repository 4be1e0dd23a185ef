import os
import tempfile

# Tests run on the CPU.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The command line turns on JAX's persistent compilation cache; in tests it lives in a fresh
# folder for the session (shared by the command-line runs the tests start), never in ~/.cache.
os.environ["PUREJAXPPO_COMPILATION_CACHE"] = tempfile.mkdtemp(prefix="purejaxppo-test-cache-")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def cartpole_run(tmp_path_factory):
    """One CartPole agent trained by the default command (``purejaxppo train``: the preset, 500k steps),
    in this process, shared by the tests that need a trained agent."""
    from helpers import run_main

    out = tmp_path_factory.mktemp("cartpole") / "run"
    done = run_main("train", "--out", str(out))
    assert done.returncode == 0, done.stderr
    return out
