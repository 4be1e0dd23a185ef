"""Training steps/s of each JAX suite's own PPO baseline against purejaxppo at the same settings, side by side.

The peers' code is imported from checkouts given on the command line (never copied here) and run with
their own training functions; each suite runs in its own subprocess, which compiles both programs,
then calls them in turns, ``--repeats`` rounds, each round led by the next side. Timings exclude
compilation (reported apart, as the first call less the median call); each call is one whole training run
of ``updates`` PPO updates. Ratios are of median steps/s, ours over the peer's, per suite.

* ``--craftax-baselines``: Craftax_Baselines' ``ppo.py`` ``make_train`` (github.com/MichaelTMatthews/
  Craftax_Baselines) on Craftax-Classic-Symbolic-v1, with optimistic resets (16 environments per reset),
  against ``PPOConfig(**PRESETS["craftax/Craftax-Classic-Symbolic-v1"])`` at the same sizes, twice: with
  the same optimistic resets (``ours``) and with every environment's own reset (``ours_own_resets``,
  ``reset_ratio=1``: gymnax's semantics, computed only for the environments whose episode ended);
* ``--xland-minigrid``: XLand-MiniGrid's ``training/train_single_task.py`` (``make_states``, ``make_train``;
  github.com/dunnolab/xland-minigrid) on MiniGrid-Empty-8x8, a GRU actor-critic, against purejaxppo's GRU
  policy with the same GRU and head widths, twice: with a convolutional torso of the same channels (``ours``;
  3x3 SAME convolutions on the raw ids, more work per observation than the peer's embeddings and 2x2 VALID
  convolutions) and with the flattened observation (``ours_mlp_torso``; less work);
* ``--navix``: Navix's ``navix.agents.PPO`` (github.com/epignatelli/navix, the tag of the installed
  version) on Navix-Empty-8x8-v0 at its own defaults, against purejaxppo's defaults at the same sizes.

Where a peer needs something that today's libraries no longer give, a stand-in is made here and listed
in the output's ``adaptations``. Run from outside the repository, e.g.

    cd /tmp && python /path/to/purejaxppo/experiments/peer_suites.py --craftax-baselines /tmp/peers/craftax_baselines \\
        --xland-minigrid /tmp/peers/xland-minigrid --navix /tmp/peers/navix --out cpu_xeon_peer_suites.json

(``--tiny`` checks the plumbing in about a minute a suite.) The checkouts: ``git --git-dir=<mirror> archive
<commit> | tar -x -C /tmp/peers/<name>``, with the commit in a file ``COMMIT`` at the top, which the output
records where the checkout is not a git work tree.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import types

# The settings both sides train with, per suite (the peer's names are mapped in each maker below).
SETTINGS = {
    "craftax": dict(env="Craftax-Classic-Symbolic-v1", num_envs=64, num_steps=16, num_minibatches=8,
                    update_epochs=4, width=128, layers=3, lr=3e-4, reset_ratio=16, updates=12),
    "xland": dict(env="MiniGrid-Empty-8x8", num_envs=256, num_steps=16, num_minibatches=16, update_epochs=1,
                  gru=64, head=64, conv=(16, 32, 64), lr=1e-3, updates=4),
    "navix": dict(env="Navix-Empty-8x8-v0", num_envs=16, num_steps=128, num_minibatches=8, update_epochs=1,
                  width=64, lr=2.5e-4, updates=160),
}


# --tiny: the plumbing in about a minute a suite, at sizes too small to time anything
TINY = {"craftax": dict(num_envs=16, width=32, updates=2), "xland": dict(num_envs=16, updates=2),
        "navix": dict(num_steps=16, updates=2)}


def _stand_in(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module


def _import_or_stand_in(name: str, notes: list[str], **attrs) -> None:
    try:
        importlib.import_module(name)
    except ImportError as e:
        _stand_in(name, **attrs)
        notes.append(f"{name}: not importable ({e}); an empty stand-in (the timed code does not use it)")


def _ours(**fields):
    import jax

    from purejaxppo import PPOConfig, make_train

    config = PPOConfig(**fields)
    return jax.jit(make_train(config)), config.num_updates * config.num_envs * config.num_steps


def craftax(checkout: str, s: dict, notes: list[str]):
    """Craftax_Baselines ``ppo.py``: 3 x width tanh layers per actor and critic, optimistic resets."""
    import jax

    from purejaxppo.core.presets import PRESETS

    _import_or_stand_in("wandb", notes)
    sys.path.insert(0, checkout)
    ppo = importlib.import_module("ppo")
    steps = s["num_envs"] * s["num_steps"] * s["updates"]
    config = dict(ENV_NAME=s["env"], NUM_ENVS=s["num_envs"], NUM_STEPS=s["num_steps"], TOTAL_TIMESTEPS=steps,
                  NUM_MINIBATCHES=s["num_minibatches"], UPDATE_EPOCHS=s["update_epochs"], LR=s["lr"],
                  LAYER_SIZE=s["width"], USE_OPTIMISTIC_RESETS=True, OPTIMISTIC_RESET_RATIO=s["reset_ratio"],
                  ANNEAL_LR=True, MAX_GRAD_NORM=1.0, GAMMA=0.99, GAE_LAMBDA=0.8, CLIP_EPS=0.2, ENT_COEF=0.01,
                  VF_COEF=0.5, ACTIVATION="tanh", TRAIN_ICM=False, USE_E3B=False, DEBUG=False, USE_WANDB=False)
    peer = jax.jit(ppo.make_train(config))
    preset = PRESETS["craftax/" + s["env"]]
    hidden = (s["width"],) * s["layers"]
    same = dict(preset, num_envs=s["num_envs"], num_steps=s["num_steps"], total_timesteps=steps,
                num_minibatches=s["num_minibatches"], update_epochs=s["update_epochs"], lr=s["lr"],
                actor_hidden=hidden, critic_hidden=hidden)
    ours, ours_steps = _ours(**dict(same, reset_ratio=s["reset_ratio"]))
    # every environment its own reset (no sharing), computed only for the environments whose episode ended
    # (Craftax marks its reset costly: the default resets layout, purejaxppo.core.tuning)
    own_resets, _ = _ours(**dict(same, reset_ratio=1))
    return {"peer": peer, "ours": ours, "ours_own_resets": own_resets}, steps, ours_steps


def xland(checkout: str, s: dict, notes: list[str]):
    """XLand-MiniGrid ``train_single_task.py``: tile and colour embeddings, three 2x2 convolutions, direction,
    previous action and reward into a GRU, one hidden layer per head; minibatches of whole environments."""
    import jax

    _import_or_stand_in("wandb", notes)
    try:
        importlib.import_module("pyrallis")
    except ImportError:
        _stand_in("pyrallis", wrap=lambda *a, **k: (lambda f: f))
        notes.append("pyrallis (command-line parsing, not installed): a stand-in whose wrap() returns the "
                     "function unchanged; the TrainConfig is built here")
    sys.path.insert(0, os.path.join(checkout, "training"))
    # utils.py's RolloutStats has jnp.asarray(0.0) field defaults, which Python 3.11's dataclasses refuse
    # (a jax.Array is unhashable): while it imports, a Python number given to jnp.asarray becomes a NumPy
    # scalar (hashable; a leaf like any other)
    import jax.numpy as jnp
    import numpy as np

    real = jnp.asarray
    jnp.asarray = lambda x, *a, **k: np.asarray(x)[()] if isinstance(x, (int, float)) and not (a or k) else real(
        x, *a, **k)
    try:
        tst = importlib.import_module("train_single_task")
    finally:
        jnp.asarray = real
    notes.append("xland: utils.RolloutStats's jnp.asarray(0) field defaults are made NumPy scalars while it "
                 "imports (Python 3.11 dataclasses refuse an unhashable jax.Array default)")
    steps = s["num_envs"] * s["num_steps"] * s["updates"]
    config = tst.TrainConfig(env_id=s["env"], num_envs=s["num_envs"], num_steps=s["num_steps"],
                             update_epochs=s["update_epochs"], num_minibatches=s["num_minibatches"],
                             total_timesteps=steps, lr=s["lr"], rnn_hidden_dim=s["gru"], head_hidden_dim=s["head"],
                             eval_episodes=0)
    notes.append("xland: eval_episodes=0 (its per-update evaluation episodes are off; purejaxppo's training "
                 "has none); rnn_hidden_dim and head_hidden_dim at the widths of the table, not its 1024/256")
    rng, env, env_params, init_hstate, train_state = tst.make_states(config)
    # flax.jax_utils.replicate for one device (a leading device axis of 1), as train() does before pmap
    one = lambda tree: jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], tree)  # noqa: E731
    train_state, init_hstate = one(train_state), one(init_hstate)
    peer = tst.make_train(env, env_params, config)  # jax.pmap over the one device

    same = dict(env="xminigrid/" + s["env"], num_envs=s["num_envs"], num_steps=s["num_steps"],
                total_timesteps=steps, num_minibatches=s["num_minibatches"], update_epochs=s["update_epochs"],
                lr=s["lr"], anneal_lr=True, adam_eps=1e-8, max_grad_norm=0.5, gamma=0.99, gae_lambda=0.95,
                clip_eps=0.2, ent_coef=0.01, policy="gru", gru_hidden=s["gru"], actor_hidden=(s["head"],),
                critic_hidden=(s["head"],))
    # No torso of ours is the peer's (tile and colour embeddings, then 2x2 VALID convolutions): ours with
    # 3x3 SAME convolutions of the same channels costs more per observation, ours with the flattened
    # observation (mlp) less; both are timed
    ours, ours_steps = _ours(**same, torso="cnn", conv_channels=s["conv"])
    ours_mlp, _ = _ours(**same, torso="mlp")
    peer_call = lambda key: peer(jax.random.split(key, 1), train_state, init_hstate)  # noqa: E731
    return {"peer": peer_call, "ours": ours, "ours_mlp_torso": ours_mlp}, steps, ours_steps


def navix(checkout: str, s: dict, notes: list[str]):
    """Navix ``navix.agents.PPO`` with its ``ActorCritic`` (2 x 64 tanh per actor and critic), the observation
    flattened as its ``examples/ppo.py`` does; both sides see the task's default (symbolic, whole-grid)
    observation."""
    import jax

    sys.path.insert(0, checkout)  # its navix package (the checkout is at the installed version's tag)
    import jax.numpy as jnp
    import numpy as np

    nx = importlib.import_module("navix")
    if not nx.__file__.startswith(os.path.abspath(checkout)):
        raise RuntimeError(f"navix was imported from {nx.__file__}, not from {checkout}")
    agents = importlib.import_module("navix.agents")
    env = nx.make(s["env"])
    shape = (int(np.prod(env.observation_space.shape)),)
    env = env.replace(observation_fn=lambda x, f=env.observation_fn: jnp.ravel(f(x)),
                      observation_space=env.observation_space.replace(shape=shape))
    steps = s["num_envs"] * s["num_steps"] * s["updates"]
    hparams = agents.PPOHparams(budget=steps, num_envs=s["num_envs"], num_steps=s["num_steps"],
                                num_minibatches=s["num_minibatches"], num_epochs=s["update_epochs"], lr=s["lr"])
    agent = agents.PPO(hparams=hparams, network=agents.ActorCritic(action_dim=len(env.action_set)), env=env)
    peer = jax.jit(agent.train)
    ours, ours_steps = _ours(env="navix/" + s["env"], num_envs=s["num_envs"], num_steps=s["num_steps"],
                             total_timesteps=steps, num_minibatches=s["num_minibatches"],
                             update_epochs=s["update_epochs"], lr=s["lr"], anneal_lr=True, max_grad_norm=0.5,
                             gae_lambda=0.95, clip_eps=0.2, ent_coef=0.01, actor_hidden=(s["width"],) * 2,
                             critic_hidden=(s["width"],) * 2)
    return {"peer": peer, "ours": ours}, steps, ours_steps


MAKERS = {"craftax": craftax, "xland": xland, "navix": navix}


def worker(suite: str, checkout: str, repeats: int, tiny: bool = False) -> dict:
    """Compile every side (the first call: compile and one run), then time them in turns; one JSON-able
    record. Ratios are of median steps/s, each ``ours*`` side over the peer."""
    import jax

    notes: list[str] = []
    s = dict(SETTINGS[suite], **(TINY[suite] if tiny else {}))
    sides, peer_steps, ours_steps = MAKERS[suite](os.path.abspath(checkout), s, notes)
    assert peer_steps == ours_steps, (peer_steps, ours_steps)
    # the peers take the raw uint32 keys of their time, ours a typed key
    key_for = lambda name, i: jax.random.PRNGKey(i) if name == "peer" else jax.random.key(i)  # noqa: E731
    first_call = {}
    for name, fn in sides.items():
        start = time.perf_counter()
        jax.block_until_ready(fn(key_for(name, 0)))
        first_call[name] = time.perf_counter() - start
    names = list(sides)
    seconds = {name: [] for name in names}
    for r in range(repeats):  # a different side goes first in each round
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            jax.block_until_ready(sides[name](key_for(name, r + 1)))
            seconds[name].append(time.perf_counter() - start)
    sps = {k: [peer_steps / t for t in v] for k, v in seconds.items()}
    median = {k: statistics.median(v) for k, v in sps.items()}
    ratios = {k: median[k] / median["peer"] for k in names if k != "peer"}
    per_round = {k: [o / p for o, p in zip(sps[k], sps["peer"])] for k in ratios}
    compile_s = {k: first_call[k] - statistics.median(seconds[k]) for k in names}
    return dict(suite=suite, tiny=tiny, settings=s, steps_per_call=peer_steps, repeats=repeats,
                first_call_seconds=first_call, compile_seconds_estimate=compile_s, seconds=seconds,
                steps_per_second=sps, median_steps_per_second=median, ratio_over_peer=ratios,
                ratio_per_round=per_round, adaptations=notes)


def _commit(path: str) -> str:
    try:
        return subprocess.run(["git", "-C", path, "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        marker = os.path.join(path, "COMMIT")
        return open(marker).read().strip() if os.path.isfile(marker) else "unknown"


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("jax", "jaxlib", "flax", "optax", "distrax", "craftax", "xminigrid", "navix", "purejaxppo"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def _cpu() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--craftax-baselines", help="a checkout of github.com/MichaelTMatthews/Craftax_Baselines")
    parser.add_argument("--xland-minigrid", help="a checkout of github.com/dunnolab/xland-minigrid")
    parser.add_argument("--navix", help="a checkout of github.com/epignatelli/navix at the installed version's tag")
    parser.add_argument("--repeats", type=int, default=4, help="timed calls per side (in turns)")
    parser.add_argument("--tiny", action="store_true", help="the plumbing at tiny sizes (no timing to quote)")
    parser.add_argument("--out", help="write the records here as JSON")
    parser.add_argument("--worker", choices=sorted(MAKERS), help=argparse.SUPPRESS)
    parser.add_argument("--checkout", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.checkout, args.repeats, args.tiny)))
        return
    checkouts = {"craftax": args.craftax_baselines, "xland": args.xland_minigrid, "navix": args.navix}
    expected = {"craftax": "ppo.py", "xland": os.path.join("training", "train_single_task.py"),
                "navix": os.path.join("navix", "agents", "ppo.py")}
    for suite, path in checkouts.items():
        if path and not os.path.isfile(os.path.join(path, expected[suite])):
            parser.error(f"no {expected[suite]} under {path!r}")
    if not any(checkouts.values()):
        parser.error("give at least one checkout: --craftax-baselines, --xland-minigrid or --navix")
    record = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  command=" ".join([os.path.basename(sys.executable)] + sys.argv), cpu=_cpu(),
                  cores=os.cpu_count(), versions=_versions(), loadavg_start=os.getloadavg(), suites=[])
    for suite, path in checkouts.items():
        if not path:
            continue
        argv = [sys.executable, os.path.abspath(__file__), "--worker", suite, "--checkout", path,
                "--repeats", str(args.repeats)] + (["--tiny"] if args.tiny else [])
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            result = dict(suite=suite, error=done.stderr.strip().splitlines()[-1] if done.stderr.strip() else
                          f"exit {done.returncode}", stderr_tail=done.stderr[-3000:])
        else:
            result = json.loads(done.stdout.strip().splitlines()[-1])
        result.update(checkout=os.path.abspath(path), commit=_commit(path))
        record["suites"].append(result)
        if "error" in result:
            print(f"{suite}: failed: {result['error']}", flush=True)
        else:
            for side, ratio in result["ratio_over_peer"].items():
                rounds = ", ".join(f"{r:.2f}" for r in result["ratio_per_round"][side])
                comp = result["compile_seconds_estimate"]
                print(f"{suite:8s} {side:15s}/ peer: {ratio:.2f}  (per round {rounds}; compile s: peer "
                      f"{comp['peer']:.0f}, {side} {comp[side]:.0f})", flush=True)
    record["loadavg_end"] = os.getloadavg()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(record, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
