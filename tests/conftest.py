import atexit
import os
import shutil
import tempfile

# Tests run on the CPU.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# JAX's persistent compilation cache, in a fresh folder for the session (never ~/.cache), shared
# by every pytest worker (they inherit the controller's environment) and the processes the tests
# start: a program that several tests build (the same configuration through the library, the
# command line or a child process) is compiled once. Cached executables are the compiled ones,
# so bit-identity checks hold.
if "PYTEST_XDIST_WORKER" not in os.environ:  # the controller, or a run without workers; it exits last
    os.environ["PUREJAXPPO_COMPILATION_CACHE"] = tempfile.mkdtemp(prefix="purejaxppo-test-cache-")
    atexit.register(shutil.rmtree, os.environ["PUREJAXPPO_COMPILATION_CACHE"], ignore_errors=True)

from purejaxppo.run.cache import enable_compilation_cache  # noqa: E402

enable_compilation_cache()

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


# The test files that take longest run first (ordered by their seconds on 2 CPU cores, from --durations,
# 2026-12-07): the two workers take whole files, and a long file started last would leave the other worker idle
# at the end of the session. Files not listed follow, in their usual order.
LONGEST_FIRST = ("test_rlhf.py", "test_suites.py", "test_sweep.py", "test_brax.py", "test_recurrent.py",
                 "test_sweep_agents.py", "test_devices.py", "test_rlhf_pieces.py", "test_runs.py", "test_probes.py",
                 "test_faults.py", "test_docs.py", "test_trpo.py", "test_programs.py", "test_train.py",
                 "test_eval_run.py", "test_notebook.py", "test_action_spaces.py", "test_pbt.py", "test_ppo_paper.py",
                 "test_tuning.py", "test_recompute.py", "test_trajectory_minibatches.py", "test_reproduce.py",
                 "test_precision.py", "test_grad_clip.py", "test_shuffle.py", "test_rlhf_group.py", "test_reference.py",
                 "test_cli.py", "test_parallel.py", "test_vmap_init.py", "test_accelerator_kit.py", "test_folders.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's tests keep their order
