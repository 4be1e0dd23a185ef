"""Saved traced programs (purejaxppo.run.programs): a later launch loads the program instead of
tracing it, runs exactly what a launch without them runs, and never loads a program whose key
does not match."""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import cache_misses, program_reads
from jax.experimental import io_callback

from purejaxppo.cli import main as cli_main
from purejaxppo.run import programs
from purejaxppo.run.programs import Programs, program_key


def _step(state, x):
    """A function of a pytree with a PRNG key, an integer counter and a float, like a runner state."""
    key, sub = jax.random.split(state["key"])
    noise = jax.random.normal(sub, x.shape)
    new = {"key": key, "n": state["n"] + 1, "w": state["w"] * 0.5 + jnp.sum(x * noise)}
    return new, {"noise": noise, "total": jnp.sum(noise)}


def _args():
    return {"key": jax.random.key(3), "n": jnp.zeros((2,), jnp.int32), "w": jnp.float32(1.0)}, jnp.arange(4.0)


def _files(folder):
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def _same(a, b):
    a = jax.tree.map(lambda x: jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x, a)
    b = jax.tree.map(lambda x: jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x, b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_a_saved_program_is_loaded_and_gives_the_jitted_result(tmp_path):
    folder = str(tmp_path / "programs")
    expected = jax.jit(_step)(*_args())

    first = Programs(folder, {"run": "a"})
    out = first.compile("step", _step, _args(), donate_argnums=(0,))(*_args())
    _same(out, expected)
    assert (first.saved, first.hits) == (1, 0) and len(_files(folder)) == 1

    second = Programs(folder, {"run": "a"})  # a later launch
    out = second.compile("step", _step, _args(), donate_argnums=(0,))(*_args())
    _same(out, expected)
    assert (second.saved, second.hits) == (0, 1) and len(_files(folder)) == 1

    other = Programs(folder, {"run": "b"})  # another description: another program
    other.compile("step", _step, _args())
    assert (other.saved, other.hits) == (1, 0) and len(_files(folder)) == 2


def test_shapes_are_read_from_a_saved_program_without_tracing(tmp_path):
    """A restore needs the initial state's shapes: read from the saved program, the function is not
    called; with no saved program (another description, or no folder) it is traced, as jax.eval_shape."""
    folder = str(tmp_path / "programs")
    Programs(folder, {"run": "a"}).compile("step", _step, _args())
    expected = jax.eval_shape(_step, *_args())

    def not_traced(*args):
        raise AssertionError("traced although the program was saved")

    loaded = Programs(folder, {"run": "a"})
    shapes = loaded.shapes("step", not_traced, _args())
    assert loaded.shapes_read == 1
    assert jax.tree.structure(shapes) == jax.tree.structure(expected)
    assert [(x.shape, x.dtype) for x in jax.tree.leaves(shapes)] == [(x.shape, x.dtype)
                                                                    for x in jax.tree.leaves(expected)]
    assert any(jnp.issubdtype(x.dtype, jax.dtypes.prng_key) for x in jax.tree.leaves(shapes))  # the key's type kept
    for unsaved in (Programs(folder, {"run": "b"}), Programs(None)):
        with pytest.raises(AssertionError, match="traced although"):
            unsaved.shapes("step", not_traced, _args())
        traced = unsaved.shapes("step", _step, _args())
        assert unsaved.shapes_read == 0 and jax.tree.structure(traced) == jax.tree.structure(expected)


def test_a_damaged_program_file_is_traced_again_and_replaced(tmp_path):
    folder = str(tmp_path / "programs")
    Programs(folder).compile("step", _step, _args())
    (name,) = _files(folder)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(b"not a program")
    again = Programs(folder)
    out = again.compile("step", _step, _args())(*_args())
    _same(out, jax.jit(_step)(*_args()))
    assert (again.saved, again.hits) == (1, 0)
    reread = Programs(folder)
    reread.compile("step", _step, _args())
    assert reread.hits == 1


def test_a_program_that_cannot_be_exported_is_compiled_directly(tmp_path):
    """Host callbacks cannot be serialized: the function still runs, nothing is saved."""
    folder = str(tmp_path / "programs")

    def with_callback(x):
        return io_callback(lambda a: np.asarray(a) * 2, jax.ShapeDtypeStruct(x.shape, x.dtype), x, ordered=True) + 1

    made = Programs(folder)
    out = made.compile("cb", with_callback, (jnp.arange(3.0),))(jnp.arange(3.0))
    np.testing.assert_array_equal(np.asarray(out), [1.0, 3.0, 5.0])
    assert made.saved == 0 and _files(folder) == []


def test_an_exported_module_that_does_not_compile_is_compiled_directly_and_not_saved(tmp_path, monkeypatch):
    folder = str(tmp_path / "programs")
    Programs(folder).compile("step", _step, _args())  # saved
    (saved,) = _files(folder)

    def refuse(self, *args):
        raise RuntimeError("this backend does not compile the module")

    monkeypatch.setattr(jax.export.Exported, "call", refuse)
    for folder_now in (folder, str(tmp_path / "fresh")):  # loaded, and traced afresh
        made = Programs(folder_now)
        out = made.compile("step", _step, _args())(*_args())
        _same(out, jax.jit(_step)(*_args()))
        assert (made.saved, made.hits) == (0, 0)
    assert _files(folder) == [saved] and _files(str(tmp_path / "fresh")) == []


def test_the_key_covers_name_description_arguments_and_code(monkeypatch):
    state, x = _args()
    base = program_key("step", {"run": "a"}, (state, x))
    assert program_key("step", {"run": "a"}, (state, x)) == base
    changed = [
        program_key("other", {"run": "a"}, (state, x)),
        program_key("step", {"run": "b"}, (state, x)),
        program_key("step", {"run": "a"}, (state, jnp.arange(5.0))),  # shape
        program_key("step", {"run": "a"}, (state, jnp.arange(4))),  # dtype
        program_key("step", {"run": "a"}, (dict(state, w=1.0), x)),  # weak type
        program_key("step", {"run": "a"}, ({**state, "extra": jnp.zeros(())}, x)),  # structure
    ]
    precision = jax.config.jax_default_matmul_precision
    jax.config.update("jax_default_matmul_precision", "highest")  # JAX's configuration
    try:
        changed.append(program_key("step", {"run": "a"}, (state, x)))
    finally:
        jax.config.update("jax_default_matmul_precision", precision)
    monkeypatch.setattr(programs, "code_digest", lambda: "another version of the package")
    changed.append(program_key("step", {"run": "a"}, (state, x)))
    assert len(set(changed + [base])) == len(changed) + 1


def test_the_code_digest_changes_with_any_source_file(tmp_path, monkeypatch):
    package = os.path.dirname(os.path.dirname(programs.__file__))
    copy = tmp_path / "purejaxppo"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(programs, "__file__", str(copy / "run" / "programs.py"))
    digest = programs.code_digest.__wrapped__  # uncached
    assert digest() == programs.code_digest()  # the same source, another folder
    before = digest()
    with open(copy / "core" / "losses.py", "a") as f:
        f.write("\n# a change\n")
    assert digest() != before


TINY = ["--env", "CartPole-v1", "--num-envs", "4", "--num-steps", "16", "--total-timesteps", "1024",
        "--chunk-updates", "4"]


def _train(out, cache, capsys, *flags):
    assert cli_main(["train", *TINY, *flags, "--out", str(out), "--compilation-cache", cache]) == 0
    return capsys.readouterr().out


def test_the_command_line_loads_saved_programs_and_trains_the_same(tmp_path, capsys):
    """The first launch saves the initial state's and the chunk's programs; the second loads
    both and trains bit-identically; so does a launch with the caches off."""
    cache = str(tmp_path / "cache")
    first = _train(tmp_path / "a", cache, capsys)
    saved = _files(os.path.join(cache, programs.FOLDER))
    assert len(saved) == 2, saved  # init and the chunk of 4 updates (16 updates: no shorter last chunk)
    assert "saved programs" not in first
    stamps = [os.stat(os.path.join(cache, programs.FOLDER, n)).st_mtime_ns for n in saved]

    second = _train(tmp_path / "b", cache, capsys)
    assert "(2 saved programs loaded)" in second, second
    assert _files(os.path.join(cache, programs.FOLDER)) == saved
    assert [os.stat(os.path.join(cache, programs.FOLDER, n)).st_mtime_ns for n in saved] == stamps

    off = _train(tmp_path / "c", "off", capsys)
    assert "saved programs" not in off
    metrics = [(tmp_path / run / "metrics.csv").read_bytes() for run in ("a", "b", "c")]
    assert metrics[0] == metrics[1] == metrics[2]
    assert len(metrics[0].splitlines()) == 1 + 16


def test_a_resumed_run_loads_the_chunk_program_and_its_compilation(tmp_path, capsys, monkeypatch):
    """The restored state is placed as a fresh run's is, so the chunk is the same program: loaded from
    the saved programs, and its compilation from JAX's cache (no new compiled program). The shapes the
    checkpoint is restored into are read from the initial state's saved program (init is not traced)."""
    cache = str(tmp_path / "cache")
    _train(tmp_path / "a", cache, capsys, "--checkpoint-every", "8")
    rows = (tmp_path / "a" / "metrics.csv").read_text()
    shutil.rmtree(tmp_path / "a" / "checkpoints" / "16")
    (tmp_path / "a" / "summary.json").unlink()
    found = program_reads(monkeypatch)
    code, misses = cache_misses(
        lambda: cli_main(["train", "--out", str(tmp_path / "a"), "--resume", "--compilation-cache", cache]))
    assert code == 0
    out = capsys.readouterr().out
    assert "resuming from the checkpoint at update 8" in out and "(1 saved program loaded)" in out, out
    assert found == [True, True]  # the initial state's shapes, then the chunk
    assert misses == 0
    assert (tmp_path / "a" / "metrics.csv").read_text() == rows


SWEEP = ["--num-envs", "4", "--num-steps", "16", "--total-timesteps", "1024", "--num-seeds", "2", "--grid",
         "lr=1e-3,3e-3"]


def _sweep(out, cache, capsys):
    assert cli_main(["sweep", *SWEEP, "--out", str(out), "--compilation-cache", cache]) == 0
    return capsys.readouterr().out


def test_a_sweep_loads_its_saved_programs_and_trains_the_same(tmp_path, capsys, monkeypatch):
    """A sweep's first launch saves its two programs (the agents' initial states, a chunk of
    vmapped updates); the second loads both, compiles nothing new and gives the same numbers, bit
    for bit. (That a program run through its saved module gives the jitted program's numbers is
    checked above and, for a sweep's, in tests/test_sweep.py; a third launch with the caches off
    would compile both programs again.)"""
    cache = str(tmp_path / "cache")
    first = _sweep(tmp_path / "a", cache, capsys)
    saved = _files(os.path.join(cache, programs.FOLDER))
    assert len(saved) == 2 and "saved programs" not in first, (saved, first)

    found = program_reads(monkeypatch)
    code, misses = cache_misses(lambda: _sweep(tmp_path / "b", cache, capsys))
    assert "(2 saved programs loaded)" in code, code
    assert found == [True, True] and misses == 0
    assert _files(os.path.join(cache, programs.FOLDER)) == saved

    for name in ("results.csv", "summary.csv"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text(), name
    first, second = np.load(tmp_path / "a" / "metrics.npz"), np.load(tmp_path / "b" / "metrics.npz")
    assert first.files == second.files and "charts__episodic_return" in first.files
    for name in first.files:
        np.testing.assert_array_equal(second[name], first[name], err_msg=name)


class _Static:
    """Static data of a tree node whose repr holds its address, as MJX's model arrays do."""


@jax.tree_util.register_pytree_node_class
class _Node:
    def __init__(self, x, static):
        self.x, self.static = x, static

    def tree_flatten(self):
        return (self.x,), self.static

    @classmethod
    def tree_unflatten(cls, static, children):
        return cls(children[0], static)


def test_the_key_does_not_hold_addresses():
    """A launch makes new objects at new addresses: the key must not change with them."""
    first, second = _Node(jnp.zeros(3), _Static()), _Node(jnp.zeros(3), _Static())
    assert "at 0x" in str(jax.tree.structure(first))
    assert program_key("f", None, (first,)) == program_key("f", None, (second,))


@pytest.mark.parametrize("override", ["shuffle=packed"])
def test_a_different_program_layout_is_another_program(tmp_path, capsys, monkeypatch, override):
    """PUREJAXPPO_TUNING changes the program without changing the config: it is in the key."""
    cache = str(tmp_path / "cache")
    _train(tmp_path / "a", cache, capsys)
    monkeypatch.setenv("PUREJAXPPO_TUNING", override)
    out = _train(tmp_path / "b", cache, capsys)
    assert "saved programs loaded" not in out
    assert len(_files(os.path.join(cache, programs.FOLDER))) == 4  # init's program is another one too
