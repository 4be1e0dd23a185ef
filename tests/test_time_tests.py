"""experiments/time_tests.py: each XLA compilation's seconds land on the test that ran it, in a real
pytest run of a small test file written here."""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "experiments"))
import time_tests  # noqa: E402

TESTS = '''
import jax
import jax.numpy as jnp

# JAX's persistent cache in a folder of this run, every program kept: a program compiled again
# after the in-memory caches are cleared comes from it
jax.config.update("jax_compilation_cache_dir", "CACHE_DIR")
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def test_compiles_two_operations():
    assert float(jnp.sin(jnp.arange(3.0)).sum() + jnp.cos(jnp.float32(1.0))) != 0.0


def test_compiles_nothing():
    assert sum(range(4)) == 6


def program(x):
    return jax.lax.scan(lambda c, y: (jnp.tanh(c @ y), None), x, jnp.ones((8, 16, 16)))[0]


def test_compiles_a_program():
    assert jax.jit(program)(jnp.ones((4, 16))).shape == (4, 16)


def test_loads_it_from_the_cache():
    jax.clear_caches()
    assert jax.jit(program)(jnp.ones((4, 16))).shape == (4, 16)
'''


def test_compilations_are_counted_against_the_test_that_ran_them(tmp_path, capsys):
    path = tmp_path / "test_small.py"
    path.write_text(TESTS.replace("CACHE_DIR", str(tmp_path / "cache")))
    out = tmp_path / "times.json"
    record = time_tests.main(["--json", str(out), "--", str(path), "-n", "0", "-p", "no:cacheprovider"])
    assert record["pytest_exit"] == 0
    tests = {k.split("::")[-1]: v for k, v in json.loads(out.read_text())["tests"].items()}
    assert set(tests) == {"test_compiles_two_operations", "test_compiles_nothing", "test_compiles_a_program",
                          "test_loads_it_from_the_cache"}
    compiles = {name: r["large_compiles"] + r["small_compiles"] for name, r in tests.items()}
    assert compiles["test_compiles_nothing"] == 0
    assert compiles["test_compiles_two_operations"] >= 2 and compiles["test_compiles_a_program"] >= 1
    assert tests["test_loads_it_from_the_cache"]["cache_hits"] >= 1  # the program, and the ones() it runs
    assert tests["test_compiles_a_program"]["cache_hits"] == 0 and tests["test_compiles_nothing"]["cache_hits"] == 0
    for r in tests.values():
        assert 0 <= r["large_compile_s"] + r["small_compile_s"] <= r["seconds"]
        # JAX's saving is the program's compile time less the load's: below 0 for a tiny program
        assert len(r["programs"]) == r["large_compiles"] and r["cache_saved_s"] <= r["seconds"]
    assert record["tests_s"] == sum(r["seconds"] for r in tests.values())
    out = capsys.readouterr().out
    assert "of which compiling" in out and "the persistent cache supplied" in out
