"""Time PureJaxRL's single-file PPO (``purejaxrl/ppo.py``) from a checkout, as a peer of purejaxppo.

The peer's code is imported from the checkout given on the command line (never copied here)
and run unchanged, with three adaptations that this script prints in its output:

* gymnax 1.0 steps return ``(obs, state, reward, terminated, truncated, info)``; ``ppo.py``
  expects the older five values. ``gymnax.make`` is wrapped so that the peer gets gymnax's own
  ``LegacyStepAPIWrapper`` (``done = terminated or truncated``), and the ``final_observation``
  entry that gymnax 1.0 adds to ``info`` is dropped (the five-value API never returned it, and
  ``ppo.py`` would otherwise keep every step's observation in its metrics);
* ``purejaxrl/wrappers.py`` imports ``brax`` and ``navix`` at import time for wrappers that
  ``ppo.py`` does not use: where they are not installed, empty stand-ins are registered;
* ``distrax`` does not import on recent JAX: where it fails, a stand-in ``Categorical``
  (sample, log_prob, entropy, the formulas distrax uses) is registered.

    python experiments/peer_purejaxrl.py --checkout /path/to/purejaxrl --env CartPole-v1 --num-envs 64 --updates 60

prints one JSON line: ``sps``, ``compile_seconds``, ``env_steps``, ``final_return`` (mean return
of the episodes that ended in the last update, averaged over seeds) and ``adaptations``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import sys
import time
import types

HPARAMS = {
    "LR": 2.5e-4,
    "NUM_STEPS": 128,
    "UPDATE_EPOCHS": 4,
    "NUM_MINIBATCHES": 4,
    "GAMMA": 0.99,
    "GAE_LAMBDA": 0.95,
    "CLIP_EPS": 0.2,
    "ENT_COEF": 0.01,
    "VF_COEF": 0.5,
    "MAX_GRAD_NORM": 0.5,
    "ACTIVATION": "tanh",
    "ANNEAL_LR": True,
    "DEBUG": False,
}


def _stand_in(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module


def _categorical_module():
    import jax
    import jax.numpy as jnp

    class Categorical:
        def __init__(self, logits):
            self.logits = logits

        def sample(self, seed):
            return jax.random.categorical(seed, self.logits)

        def log_prob(self, value):
            log_p = jax.nn.log_softmax(self.logits)
            return jnp.sum(jax.nn.one_hot(value, self.logits.shape[-1]) * log_p, axis=-1)

        def entropy(self):
            log_p = jax.nn.log_softmax(self.logits)
            return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)

    return Categorical


def install_adaptations() -> list[str]:
    """Register what the peer needs on today's libraries; returns what was done, in words."""
    notes = []
    for name in ("brax", "navix"):
        try:
            importlib.import_module(name)
        except Exception:
            if name == "brax":
                _stand_in("brax")
                _stand_in("brax.envs")
                _stand_in("brax.envs.wrappers")
                _stand_in("brax.envs.wrappers.training", EpisodeWrapper=object, AutoResetWrapper=object)
            else:
                _stand_in("navix")
            notes.append(f"{name}: not importable here, empty stand-in (imported by wrappers.py, unused by ppo.py)")
    try:
        importlib.import_module("distrax")
        notes.append("distrax: the real package")
    except Exception as e:
        _stand_in("distrax", Categorical=_categorical_module())
        notes.append(f"distrax: does not import ({type(e).__name__}); stand-in Categorical (sample, log_prob, entropy)")

    import gymnax
    from gymnax.wrappers.compat import LegacyStepAPIWrapper

    class FiveValueStep(LegacyStepAPIWrapper):
        def step(self, key, state, action, params=None):
            obs, state, reward, done, info = super().step(key, state, action, params)
            info = {k: v for k, v in info.items() if k != "final_observation"}
            return obs, state, reward, done, info

    make = gymnax.make

    def make_legacy(name, **kwargs):
        env, params = make(name, **kwargs)
        return FiveValueStep(env), params

    gymnax.make = make_legacy
    notes.append("gymnax 1.0 step through gymnax's LegacyStepAPIWrapper, info['final_observation'] dropped")
    return notes


def run(checkout: str, env: str, num_envs: int, updates: int, seeds: int) -> dict:
    notes = install_adaptations()
    sys.path.insert(0, os.path.join(os.path.abspath(checkout), "purejaxrl"))
    import jax
    import numpy as np

    ppo = importlib.import_module("ppo")
    config = dict(HPARAMS, NUM_ENVS=num_envs, ENV_NAME=env, TOTAL_TIMESTEPS=num_envs * HPARAMS["NUM_STEPS"] * updates)
    train = ppo.make_train(config)
    if seeds > 1:
        train, keys = jax.vmap(train), jax.random.split(jax.random.PRNGKey(0), seeds)
    else:
        keys = jax.random.PRNGKey(0)
    t0 = time.perf_counter()
    compiled = jax.jit(train).lower(keys).compile()
    compile_seconds = time.perf_counter() - t0
    best, out = float("inf"), None
    for i in range(2):
        k = jax.random.split(jax.random.PRNGKey(i + 1), seeds) if seeds > 1 else jax.random.PRNGKey(i + 1)
        t0 = time.perf_counter()
        out = jax.block_until_ready(compiled(k))
        best = min(best, time.perf_counter() - t0)
    info = out["metrics"]
    ended = np.asarray(info["returned_episode"][..., -1, :, :])
    returns = np.asarray(info["returned_episode_returns"][..., -1, :, :])
    per_seed = np.where(ended, returns, 0).reshape(seeds, -1).sum(1) / np.maximum(ended.reshape(seeds, -1).sum(1), 1)
    steps = config["NUM_UPDATES"] * num_envs * HPARAMS["NUM_STEPS"] * seeds
    return dict(
        sps=steps / best,
        compile_seconds=compile_seconds,
        env_steps=steps,
        final_return=float(per_seed.mean()),
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        adaptations=notes,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkout", required=True, help="a checkout of github.com/luchris429/purejaxrl")
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--updates", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=1, help="seeds vmapped in one program")
    args = parser.parse_args()
    if not os.path.isfile(os.path.join(args.checkout, "purejaxrl", "ppo.py")):
        parser.error(f"--checkout: no purejaxrl/ppo.py under {args.checkout!r}; give a checkout of PureJaxRL")
    print(json.dumps(run(args.checkout, args.env, args.num_envs, args.updates, args.seeds)))


if __name__ == "__main__":
    main()
