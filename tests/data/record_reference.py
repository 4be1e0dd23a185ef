"""Record the metrics and final parameters of a few small runs as a regression reference.

``tests/test_reference.py`` checks that today's code gives exactly these numbers for the same
keys and configurations. Run this script only when a deliberate change alters the numbers,
and say which change in the commit::

    python tests/data/record_reference.py     # writes tests/data/reference_runs.npz

XLA compiles for the host's processor, and its float rounding differs from one kind to another,
so the numbers are exact only on the kind of machine they were recorded on; elsewhere the test
allows float rounding. ``--this-machine`` records the same runs for this machine's kind, after
checking them against ``reference_runs.npz`` to float rounding, into a file of their own
(``reference_runs.machine-<digest>.npz``), so that this kind of machine checks them exactly::

    python tests/data/record_reference.py --this-machine
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import sys

import jax
import numpy as np

from purejaxppo import PPOConfig, make_train
from purejaxppo.core.tuning import Tuning

# Each configuration exercises a different path through the program.
CONFIGS = {
    # discrete actions, the defaults: clipping, value clipping, annealing, advantage normalisation
    "cartpole": (PPOConfig(env="CartPole-v1", num_envs=8, num_steps=32, num_minibatches=4, update_epochs=2,
                           total_timesteps=8 * 32 * 6, lr=2.5e-3), 0),
    # continuous actions, both normalisations, adaptive KL penalty on top of clipping, target-KL early stop
    "pendulum": (PPOConfig(env="Pendulum-v1", num_envs=4, num_steps=64, num_minibatches=2, update_epochs=3,
                           total_timesteps=4 * 64 * 6, gamma=0.95, normalize_obs=True, normalize_reward=True,
                           kl_penalty="adaptive", target_kl=3e-4, lr=3e-3, log_std_init=-0.5), 1),
    # a truncation every 5 steps (the final-observation bootstrap), shared torso, fixed KL penalty,
    # no value clipping, constant learning rate, raw advantages
    "timelimit": (PPOConfig(env="Probe-TimeLimit", num_envs=4, num_steps=16, num_minibatches=2, update_epochs=2,
                            total_timesteps=4 * 16 * 6, shared_torso=True, kl_penalty="fixed", kl_coef=0.3,
                            clip_vloss=False, anneal_lr=False, norm_adv=False), 2),
    # truncation treated as termination, the KL penalty alone (clip_eps = 0), relu, one hidden layer
    "timelimit_as_end": (PPOConfig(env="Probe-TimeLimit", num_envs=4, num_steps=32, num_minibatches=1,
                                   update_epochs=2, total_timesteps=4 * 32 * 5, bootstrap_truncation=False, clip_eps=0.0,
                          kl_penalty="adaptive", activation="relu", actor_hidden=(32,), critic_hidden=(16,)), 3),
}


def machine() -> dict:
    """What decides XLA's CPU code beside the library versions: the processor's vendor, whether it has
    AVX-512, its model, its vector and matrix instruction sets, and the number of CPUs (XLA compiles for
    the host's instruction set, and its float rounding differs between them). Read from
    ``/proc/cpuinfo``; empty elsewhere. A record matches a machine when each of the fields it holds
    agrees (``reference_runs.npz`` holds the first two)."""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return {}

    def field(name: str) -> str:
        return next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith(name)), "")

    flags = field("flags").split()
    return {"vendor": field("vendor_id"), "avx512f": "avx512f" in flags, "model": field("model name"),
            "isa": sorted(f for f in flags if f.startswith(("avx", "amx", "fma", "f16c", "sse"))),
            "cpus": os.cpu_count()}


HERE = os.path.dirname(os.path.abspath(__file__))
PATH = os.path.join(HERE, "reference_runs.npz")


def machine_path() -> str:
    """The record of this machine's kind (``--this-machine``)."""
    digest = hashlib.sha256(json.dumps(machine(), sort_keys=True).encode()).hexdigest()[:12]
    return os.path.join(HERE, f"reference_runs.machine-{digest}.npz")


def run(name: str, tuning: Tuning) -> dict[str, np.ndarray]:
    """The metrics and final parameters of the run ``name`` with the program layout ``tuning``."""
    config, seed = CONFIGS[name]
    state, metrics = jax.jit(make_train(config, tuning=tuning))(jax.random.key(seed))
    out = {f"{name}|metric|{k}": np.asarray(v) for k, v in metrics.items()}
    for path, leaf in jax.tree_util.tree_leaves_with_path(state.params):
        out[f"{name}|param|{jax.tree_util.keystr(path)}"] = np.asarray(leaf)
    return out


def record() -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name in CONFIGS:
        out.update(run(name, Tuning()))  # the CPU layout, on every backend (purejaxppo/core/tuning.py)
    return out


def _matches(data) -> bool:
    """Whether this machine should give a record bit for bit: the same library versions and the same
    kind of processor (each field of the record's ``__machine__`` equal to this machine's)."""
    import importlib.metadata as md

    here = machine()
    same = all(md.version(p) == v for p, v in json.loads(str(data["__versions__"])).items())
    return same and all(here.get(k) == v for k, v in json.loads(str(data["__machine__"])).items())


def load() -> tuple[dict[str, np.ndarray], bool]:
    """The recorded arrays, and whether this machine should give them bit for bit: those of
    ``reference_runs.npz``, or of a record of this machine's kind (``--this-machine``) where one
    matches (the recorded runs are the same, to float rounding)."""
    records = [np.load(p) for p in [PATH, *sorted(glob.glob(os.path.join(HERE, "reference_runs.machine-*.npz")))]]
    data = next((d for d in records if _matches(d)), None)
    exact = data is not None
    data = data if exact else records[0]
    return {k: data[k] for k in data.files if not k.startswith("__")}, exact


def assert_close(key: str, today: np.ndarray, expected: np.ndarray, atol: float = 1e-4) -> None:
    """A recorded array against today's to float rounding (another processor, or another program layout).
    Rounding differences grow as training goes on (Pendulum's small losses reach 1e-3 relative by its
    last update), so a metric's first updates are held tight and the whole run looser; the early
    stops exactly. ``atol``: the whole run's absolute tolerance."""
    if "|metric|" in key:
        np.testing.assert_allclose(today[:3], expected[:3], rtol=2e-4, atol=1e-5, err_msg=key)
        if key.endswith("losses/epochs"):
            np.testing.assert_array_equal(today, expected, err_msg=key)
    np.testing.assert_allclose(today, expected, rtol=1e-2, atol=atol, err_msg=key)


if __name__ == "__main__":
    import importlib.metadata as md

    data = record()
    path = PATH
    if "--this-machine" in sys.argv[1:]:
        reference = np.load(PATH)
        for k in reference.files:  # the same runs as the reference, to float rounding
            if not k.startswith("__"):
                assert_close(k, data[k], reference[k])
        assert sorted(data) == sorted(k for k in reference.files if not k.startswith("__"))
        path = machine_path()
    versions = {p: md.version(p) for p in ("jax", "jaxlib", "flax", "optax", "gymnax")}
    np.savez_compressed(path, __versions__=np.asarray(json.dumps(versions)),
                        __machine__=np.asarray(json.dumps(machine())), **data)
    print(f"wrote {len(data)} arrays to {path} ({versions}, {machine()})", file=sys.stderr)
