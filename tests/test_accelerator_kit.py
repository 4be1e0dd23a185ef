"""The accelerator kit (experiments/accelerator_kit.py) and its runner (experiments/accelerator_run.py):
the kit is built here from a fake peer and a fake wheel (nothing downloaded), and the runner's dry
run runs its steps for real at tiny sizes. The full dry run of every step (minutes of compilation
on a CPU) runs with PUREJAXPPO_SLOW_TESTS=1."""

from __future__ import annotations

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "experiments"))
import accelerator_kit  # noqa: E402
import accelerator_run  # noqa: E402


def _wheel(path):
    """A minimal valid wheel of an empty distribution (pip can install it, offline)."""
    import zipfile

    name, version = path.name.split("-")[:2]
    info = f"{name}-{version}.dist-info"
    files = {f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{f},,\n" for f in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for f, text in files.items():
            z.writestr(f, text)


@pytest.fixture
def kit(tmp_path):
    peer = tmp_path / "purejaxrl-checkout"
    (peer / "purejaxrl").mkdir(parents=True)
    (peer / "purejaxrl" / "ppo.py").write_text("# a stand-in checkout\n")
    (peer / ".git").mkdir()
    (peer / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "six-1.17.0-py2.py3-none-any.whl").write_bytes(b"not a real wheel")  # installed here: kept as is
    (wheels / "nvidia_cublas-13.0-py3-none-manylinux2014_x86_64.whl").write_bytes(b"the device has its own")
    _wheel(wheels / "notinstalled_pkg-1.0-py3-none-any.whl")
    out = tmp_path / "kit"
    manifest = accelerator_kit.main(["build", "--out", str(out), "--peers", f"purejaxrl={peer}",
                                     "--wheels-from", str(wheels)])
    return out, manifest


def test_build_copies_the_peers_without_git_and_lists_the_wheels(kit):
    out, manifest = kit
    assert (out / "peers" / "purejaxrl" / "purejaxrl" / "ppo.py").exists()
    assert not (out / "peers" / "purejaxrl" / ".git").exists()
    assert manifest["wheels"] == ["notinstalled_pkg-1.0-py3-none-any.whl", "six-1.17.0-py2.py3-none-any.whl"]
    assert manifest["left_out_for_size"] == []  # the device's own NVIDIA wheel is left out, not by size
    assert json.loads((out / "manifest.json").read_text())["peers"] == {"purejaxrl": "peers/purejaxrl"}
    with pytest.raises(SystemExit, match="--peers: purejaxrl=/no/such: no such folder"):
        accelerator_kit.parse_peers("purejaxrl=/no/such")
    with pytest.raises(SystemExit, match="is not NAME=PATH"):
        accelerator_kit.parse_peers("purejaxrl")


def test_the_kit_is_ignored_by_git():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, ".gitignore")) as f:
        assert ".accelerator/" in f.read().split()


def test_the_device_commands_measure_the_gpu_rows_beside_the_peer_with_mixed_precision(kit):
    out, _ = kit
    cmds = accelerator_run.commands(str(out), "/o", dry_run=False)
    # only what is not installed here; six is
    assert [os.path.basename(c) for c in cmds["install"] if c.endswith(".whl")] == ["notinstalled_pkg-1.0-py3-none-any.whl"]
    assert "--no-index" in cmds["install"] and "--dry-run" not in cmds["install"]
    table = cmds["gpu_table"]
    assert table[table.index("--platform") + 1] == "gpu"
    assert table[table.index("--purejaxrl") + 1] == str(out / "peers" / "purejaxrl")
    assert "bfloat16=precision=bfloat16" in table and "256 seeds" in table and "16384" in table
    assert "bfloat16 products=precision=bfloat16_products" in table
    assert "hopper-mjx:2048:20:1310720" in cmds["brax"]
    assert "--tiny" not in cmds["minatar"] and cmds["minatar"][-1] == "/o/minatar"


def test_dry_run_installs_nothing_and_stops_the_suite_at_the_budget(kit, tmp_path):
    """The install step (``pip install --dry-run`` of the kit's wheels) and the MinAtar suite
    (``reproduce minatar --tiny``) run for real; the suite is stopped when the budget ends."""
    kit_dir, _ = kit
    out = tmp_path / "out"
    summary = accelerator_run.main(["--kit", str(kit_dir), "--out", str(out), "--dry-run", "--budget", "12",
                                    "--steps", "install,minatar"])
    install, minatar = summary["steps"]
    assert install["step"] == "install" and "--dry-run" in install["command"]
    assert install["rc"] == 0, (out / "install.log").read_text()
    assert "notinstalled_pkg" in (out / "install.log").read_text()
    assert minatar["step"] == "minatar" and "--tiny" in minatar["command"]
    assert minatar["timed_out"] and minatar["seconds"] < 30
    saved = json.loads((out / "summary.json").read_text())
    assert saved["kit"]["peers"] == {"purejaxrl": "peers/purejaxrl"}
    assert "minatar.log" in saved["outputs"] and "install.log" in saved["outputs"]
    with pytest.raises(SystemExit):
        accelerator_run.main(["--kit", str(kit_dir), "--out", str(out), "--steps", "gpu"])


@pytest.mark.skipif(not os.environ.get("PUREJAXPPO_SLOW_TESTS"), reason="minutes of compilation: PUREJAXPPO_SLOW_TESTS=1")
def test_full_dry_run_every_step(kit, tmp_path):
    kit_dir, _ = kit
    out = tmp_path / "out"
    summary = accelerator_run.main(["--kit", str(kit_dir), "--out", str(out), "--dry-run", "--budget", "900",
                                    "--steps", "gpu_table,brax,startup,minatar"])
    rows = {r["step"]: r for r in summary["steps"]}
    for step in ("gpu_table", "brax", "startup"):
        assert rows[step]["rc"] == 0 and not rows[step]["timed_out"], (out / f"{step}.log").read_text()[-3000:]
    assert json.loads((out / "brax.json").read_text())["rows"][0]["summary"]["sps_ratio"] > 0
    assert json.loads((out / "gpu_table.json").read_text())
    assert rows["minatar"]["rc"] == 0, (out / "minatar.log").read_text()[-3000:]


@pytest.fixture(scope="module")
def peer_brax():
    """experiments/peer_brax.py imported here (its command-line errors are checked in this process); the stand-ins
    for JAX's removed device_put_replicated / device_put_sharded it installs on import are taken away after."""
    import jax

    import peer_brax

    yield peer_brax
    for name in peer_brax.STAND_INS:
        delattr(jax, name)


@pytest.mark.parametrize("row, expected", [
    ("hopper:256:20:102400", "'hopper:256:20:102400': accepted: TASK-BACKEND:ENVS:UNROLL:STEPS"),
    ("hopper-positional:256:20", "accepted: TASK-BACKEND:ENVS:UNROLL:STEPS"),
    ("hopper-positronal:256:20:102400", "unknown Brax task 'hopper-positronal'"),
    ("hopper-positional:256:20:100000", "19 updates; accepted: STEPS that make a multiple of 4 updates"),
    ("playground/CartpoleSwingUp:256:30:983040",
     "unknown preset 'playground/CartpoleSwingUp' (did you mean playground/CartpoleSwingup"),
])
def test_peer_brax_refuses_a_bad_row_in_one_line_before_any_run(row, expected, peer_brax, capsys):
    """Every --row is checked up front: a bad second row is found before the first row's minutes of training."""
    with pytest.raises(SystemExit) as stop:
        peer_brax.main(["--row", "inverted_pendulum-positional:8:4:128", "--row", row])
    assert stop.value.code == 2
    out, err = capsys.readouterr()
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"peer_brax.py: error: --row '{row}': ") and expected in last, last
    assert "Traceback" not in err and out == ""  # no run started
