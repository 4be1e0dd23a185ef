"""Build, on this machine, everything an accelerator session needs, into one git-ignored folder.

    python experiments/accelerator_kit.py build --peers purejaxrl=/path/to/purejaxrl

writes ``.accelerator/`` (the default ``--out``):

* ``wheels/``: Python 3.12 manylinux wheels (``pip download --python-version 3.12 --only-binary=:all:
  --platform manylinux2014_x86_64``) of the packages a device with JAX and CUDA lacks: gymnax,
  gymnasium, Brax, MuJoCo and MJX, with the dependencies pip resolves for them, less JAX itself, its
  CUDA plugins and NVIDIA libraries, NumPy and SciPy (the device has its own, built for its CUDA),
  less what the runner never uses (MuJoCo's viewer, OpenGL), and, while the kit is over 60 MiB (a
  device call carries 64 MiB), less purejaxppo's own heavier dependencies (``DROP_FIRST``, listed in
  the manifest). Pure-Python wheels work on any Python;
* ``peers/NAME/``: a copy of each peer checkout given with ``--peers NAME=PATH`` (its files, not its
  ``.git``), for the runner to import from;
* ``manifest.json``: what is in the kit, its size, and the command and date that built it.

Then the device machine (no internet) runs, from the repository root, with the kit carried along::

    python experiments/accelerator_run.py --kit .accelerator --out $OUT

(``experiments/accelerator_run.py``). ``--no-wheels`` skips the download (a kit of peers only, or a
check of the plumbing); ``--wheels-from DIR`` copies wheels already on this machine instead.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import time

PACKAGES = ("gymnax==1.0.1", "gymnasium", "brax==0.14.2", "mujoco==4.0.0", "mujoco-mjx==3.17.0", "six", "flatbuffers")
# the device's own: JAX built for its CUDA, and the libraries that come with it
DEVICE_HAS = ("jax", "jaxlib", "jax_cuda", "jax_plugins", "nvidia_", "numpy", "scipy", "ml_dtypes", "opt_einsum")
# never used by the runner's steps: MuJoCo's viewer and OpenGL bindings, an event loop of Brax's web viewer
UNUSED = ("mujoco_studio", "glfw", "pyopengl", "uvloop")
# left out, in this order, while the kit is over MAX_BYTES: purejaxppo's own dependencies (a device that ran
# purejaxppo before has them; the runner's install log says what is missing)
DROP_FIRST = ("tensorstore", "pandas", "matplotlib", "fonttools", "pillow", "kiwisolver", "contourpy", "seaborn")
PLATFORM = ("--python-version", "3.12", "--only-binary=:all:", "--platform", "manylinux2014_x86_64",
            "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux_2_28_x86_64")
CARRY_LIMIT = 64 * 2**20  # what a device call can carry along
MAX_BYTES = 60 * 2**20  # the kit's target size, under CARRY_LIMIT with the peers


def parse_peers(text: str) -> dict[str, str]:
    """``"purejaxrl=PATH,other=PATH"`` -> {name: absolute path}; a one-line error for a bad item."""
    peers = {}
    for item in filter(None, (s.strip() for s in (text or "").split(","))):
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--peers: {item!r} is not NAME=PATH")
        if not os.path.isdir(path):
            raise SystemExit(f"--peers: {name}={path}: no such folder")
        peers[name] = os.path.abspath(path)
    return peers


def download_wheels(dest: str, packages: tuple[str, ...] = PACKAGES) -> None:
    """The wheels of ``packages`` and their dependencies for Python 3.12 on x86-64 Linux."""
    os.makedirs(dest, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "-d", dest, *PLATFORM, *packages], check=True)


def wheel_name(path: str) -> str:
    return os.path.basename(path).split("-")[0].lower()


def prune(dest: str, max_bytes: int = MAX_BYTES) -> list[str]:
    """Remove the device's own wheels (``DEVICE_HAS``) and unused ones (``UNUSED``), then ``DROP_FIRST``
    in order while the folder is over ``max_bytes``; returns the names left out by size."""
    for path in glob.glob(os.path.join(dest, "*.whl")):
        name = wheel_name(path)
        if any(name == d or name.startswith(d) for d in DEVICE_HAS) or name in UNUSED:
            os.remove(path)
    dropped = []
    for name in DROP_FIRST:
        if folder_bytes(dest) <= max_bytes:
            break
        for path in glob.glob(os.path.join(dest, "*.whl")):
            if wheel_name(path) == name:
                os.remove(path)
                dropped.append(name)
    return dropped


def folder_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def build(out: str, peers: dict[str, str], wheels: bool = True, wheels_from: str | None = None) -> dict:
    os.makedirs(out, exist_ok=True)
    wheel_dir = os.path.join(out, "wheels")
    if wheels_from:
        os.makedirs(wheel_dir, exist_ok=True)
        for path in glob.glob(os.path.join(wheels_from, "*.whl")):
            shutil.copy2(path, wheel_dir)
    elif wheels:
        download_wheels(wheel_dir)
    dropped = prune(wheel_dir) if os.path.isdir(wheel_dir) else []
    for name, path in peers.items():
        target = os.path.join(out, "peers", name)
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(path, target, ignore=shutil.ignore_patterns(".git", "__pycache__", "*.pyc"))
    manifest = {
        "built": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python experiments/accelerator_kit.py build " + " ".join(sys.argv[2:]),
        "wheels": sorted(os.path.basename(p) for p in glob.glob(os.path.join(wheel_dir, "*.whl"))),
        "peers": {name: os.path.join("peers", name) for name in peers},
        "left_out_for_size": dropped,
        "bytes": folder_bytes(out),
    }
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    if manifest["bytes"] > CARRY_LIMIT:
        print(f"warning: the kit is {manifest['bytes'] / 2**20:.0f} MiB, over the {CARRY_LIMIT // 2**20} MiB "
              "a device call carries", file=sys.stderr)
    return manifest


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build the kit")
    b.add_argument("--out", default=".accelerator")
    b.add_argument("--peers", default="", help="NAME=PATH,... (e.g. purejaxrl=/path/to/purejaxrl)")
    b.add_argument("--no-wheels", action="store_true", help="skip the wheel download")
    b.add_argument("--wheels-from", metavar="DIR", help="copy the wheels in DIR instead of downloading")
    args = p.parse_args(argv)
    manifest = build(args.out, parse_peers(args.peers), wheels=not args.no_wheels, wheels_from=args.wheels_from)
    print(f"{args.out}: {len(manifest['wheels'])} wheels, peers {', '.join(manifest['peers']) or 'none'}, "
          f"{manifest['bytes'] / 2**20:.1f} MiB")
    return manifest


if __name__ == "__main__":
    main()
