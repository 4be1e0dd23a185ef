"""Rejax's PPO (PyPI ``rejax``) side by side with purejaxppo: single runs and vmapped seed sweeps.

Rejax is never a dependency of purejaxppo: install it into a separate environment and name its
Python here (Rejax 0.1.3 runs on the JAX this project uses, so a virtual environment that sees
the system's packages is enough)::

    python -m venv --system-site-packages /tmp/peers/rejax-venv
    /tmp/peers/rejax-venv/bin/pip install --no-deps rejax==0.1.3
    python experiments/peer_rejax.py --rejax-python /tmp/peers/rejax-venv/bin/python \\
        --json results/speed/cpu_xeon_peer_rejax.json

Every workload runs in a fresh process per trainer, interleaved (ours, Rejax, ours, Rejax ...,
``--repeat`` rounds); a process compiles its program (``jit(...).lower().compile()``), then times
two calls with different keys and keeps the faster: env steps/s exclude compilation, which is
reported apart. A sweep is each trainer's ``train`` under ``jax.vmap`` over seeds (Rejax's own
way: ``jax.jit(jax.vmap(algo.train))``), env steps counted over all seeds.

Matched settings: environments, steps per rollout, minibatches, epochs, learning rate (constant:
Rejax has no annealing), clip 0.2 on the policy ratio and on the value (Rejax clips the value with
the same epsilon), entropy 0.01, value coefficient 0.5, gradient norm 0.5, gamma 0.99, GAE 0.95,
separate 64 x 64 tanh actor and critic (Rejax flattens MinAtar's 10x10x4 observation; so does
purejaxppo's mlp torso). Rejax evaluates 128 episodes every 4,096 steps by default; here its
periodic evaluation is off (``eval_freq`` = the whole run, no initial evaluation, a no-op
callback), so it computes no metrics; purejaxppo's run returns its metrics (episode returns, losses)
and they are waited for, as in training. Rejax 0.1.3 unpacks gymnax's old five-value step: it gets gymnax 1.0's environments
through gymnax's own ``LegacyStepAPIWrapper`` (``legacy_make``), as ``experiments/peer_purejaxrl.py``
gives PureJaxRL. Both trainers' final policies are scored by the same function in this file
(``judge``: 128 episodes on the gymnax environment, actions sampled from the policy, as Rejax's
own ``act`` does). Differences that stay: purejaxppo bootstraps time-limit truncations, Rejax does
not; Rejax keeps two Adam optimisers (actor, critic) and clips their gradients apart; initialisers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

WORKLOADS = {  # name: (env, num_envs, num_steps, minibatches, epochs, lr, total steps per seed, seeds)
    "CartPole-v1, 64 envs": ("CartPole-v1", 64, 128, 4, 4, 2.5e-4, 524_288, 1),
    "CartPole-v1, 16 seeds vmapped x 64 envs": ("CartPole-v1", 64, 128, 4, 4, 2.5e-4, 131_072, 16),
    "Breakout-MinAtar, 128 envs": ("Breakout-MinAtar", 128, 128, 4, 4, 5e-4, 524_288, 1),
    "Breakout-MinAtar, 8 seeds vmapped x 64 envs": ("Breakout-MinAtar", 64, 128, 4, 4, 5e-4, 131_072, 8),
}
TINY = {"CartPole-v1, tiny": ("CartPole-v1", 8, 16, 2, 1, 2.5e-4, 256, 1),
        "CartPole-v1, 2 seeds vmapped, tiny": ("CartPole-v1", 8, 16, 2, 1, 2.5e-4, 256, 2)}


def judge(act, env, env_params, key, episodes: int = 128):
    """Mean return of ``episodes`` episodes of ``act(obs, key) -> action`` on a gymnax environment
    (each episode in its own environment, run until it ends or hits the time limit)."""
    import jax
    import jax.numpy as jnp

    limit = env_params.max_steps_in_episode

    def one(k):
        k_reset, k_run = jax.random.split(k)
        obs, state = env.reset(k_reset, env_params)

        def step(c):
            t, obs, state, ret, done, k = c
            k, k_act, k_step = jax.random.split(k, 3)
            obs, state, r, d, _ = env.step(k_step, state, act(obs, k_act), env_params)
            return t + 1, obs, state, ret + jnp.squeeze(r), d, k

        c = jax.lax.while_loop(lambda c: (c[0] < limit) & ~c[4], step, (0, obs, state, 0.0, False, k_run))
        return c[3]

    return float(jnp.mean(jax.jit(jax.vmap(one))(jax.random.split(key, episodes))))


def legacy_make(name: str):
    """A gymnax 1.0 environment behind gymnax's own ``LegacyStepAPIWrapper`` (the five-value step,
    ``done = terminated or truncated``, that Rejax 0.1.3 unpacks), ``info["final_observation"]``
    dropped (the five-value API never had it)."""
    import gymnax
    from gymnax.wrappers.compat import LegacyStepAPIWrapper

    class FiveValueStep(LegacyStepAPIWrapper):
        def __deepcopy__(self, memo):  # Rejax deep-copies its settings; the wrapper holds no state
            return self

        def step(self, key, state, action, params=None):
            obs, state, reward, done, info = super().step(key, state, action, params)
            return obs, state, reward, done, {k: v for k, v in info.items() if k != "final_observation"}

    env, params = gymnax.make(name)
    return FiveValueStep(env), params


def _time(train, keys):
    import jax

    t = time.perf_counter()
    compiled = jax.jit(train).lower(keys[0]).compile()
    compile_s = time.perf_counter() - t
    best, out = float("inf"), None
    for key in keys[1:]:
        t = time.perf_counter()
        out = jax.block_until_ready(compiled(key))
        best = min(best, time.perf_counter() - t)
    return compile_s, best, out


def our_config(name: str, **changes):
    """purejaxppo's settings for workload ``name``: Rejax's PPO settings, as its own run takes them."""
    from purejaxppo import PPOConfig

    env_name, envs, steps, mbs, epochs, lr, total, _ = {**WORKLOADS, **TINY}[name]
    return PPOConfig(env=env_name, num_envs=envs, num_steps=steps, num_minibatches=mbs, update_epochs=epochs, lr=lr,
                     anneal_lr=False, total_timesteps=total, actor_hidden=(64, 64), critic_hidden=(64, 64),
                     activation="tanh", clip_eps=0.2, clip_vloss=True, vf_clip_eps=0.2, ent_coef=0.01, vf_coef=0.5,
                     max_grad_norm=0.5, gamma=0.99, gae_lambda=0.95, **changes)


def child(trainer: str, name: str, clip_per_network: bool = False) -> dict:
    import jax
    import numpy as np

    env_name, envs, steps, mbs, epochs, lr, total, seeds = {**WORKLOADS, **TINY}[name]
    key = jax.random.key(0) if trainer == "purejaxppo" else jax.random.PRNGKey(0)

    def keys_for(k):  # one key per timed call; a sweep's call takes one key per seed
        return jax.random.split(k, seeds) if seeds > 1 else k

    call_keys = [keys_for(k) for k in jax.random.split(key, 3)]
    if trainer == "purejaxppo":
        from purejaxppo.core.train import make_trainer
        from purejaxppo.run.policy import PolicyParams, policy_act

        config = our_config(name, clip_per_network=clip_per_network)
        t = make_trainer(config)
        # the whole output, metrics included, as a run keeps it (with the state alone XLA would drop the metrics' work)
        train = t.train if seeds == 1 else jax.vmap(t.train)
        compile_s, run_s, (state, _metrics) = _time(train, call_keys)
        act = policy_act(t, deterministic=False)
        states = [state] if seeds == 1 else [jax.tree_util.tree_map(lambda x: x[i], state) for i in range(seeds)]
        acts = [(lambda s: lambda obs, k: act(PolicyParams(s.params, s.obs_rms), obs, k))(s) for s in states]
        env_steps = config.num_updates * config.batch_size * seeds
        env, env_params = legacy_make(env_name)
        version = {"purejaxppo": "checkout", "clip_per_network": clip_per_network}
    else:
        import jax.numpy as jnp
        from rejax import PPO

        legacy_env, legacy_params = legacy_make(env_name)
        algo = PPO.create(env=legacy_env, env_params=legacy_params, num_envs=envs, num_steps=steps, num_minibatches=mbs, num_epochs=epochs,
                          learning_rate=lr, total_timesteps=total, eval_freq=total, skip_initial_evaluation=True,
                          clip_eps=0.2, ent_coef=0.01, vf_coef=0.5, max_grad_norm=0.5, gamma=0.99, gae_lambda=0.95,
                          agent_kwargs={"activation": "tanh", "hidden_layer_sizes": (64, 64)})
        algo = algo.replace(eval_callback=lambda algo, ts, rng: jnp.zeros(()))
        train = (lambda k: algo.train(k)[0]) if seeds == 1 else jax.vmap(lambda k: algo.train(k)[0])
        compile_s, run_s, ts = _time(train, call_keys)
        tss = [ts] if seeds == 1 else [jax.tree_util.tree_map(lambda x: x[i], ts) for i in range(seeds)]
        acts = [algo.make_act(s) for s in tss]
        iteration = envs * steps
        env_steps = -(-total // iteration) * iteration * seeds  # Rejax rounds the run up to whole iterations
        env, env_params = algo.env, algo.env_params
        from importlib.metadata import version as v

        version = {"rejax": v("rejax")}
    returns = [judge(a, env, env_params, jax.random.PRNGKey(99)) for a in acts]
    return {"trainer": trainer, "workload": name, "env_steps": env_steps, "sps": env_steps / run_s,
            "run_s": run_s, "compile_s": compile_s, "eval_return": float(np.mean(returns)),
            "eval_returns": [round(r, 1) for r in returns], "jax": jax.__version__, "python": sys.executable,
            **version}


def run_child(python: str, trainer: str, name: str, clip_per_network: bool = False) -> dict:
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    here = os.path.dirname(os.path.abspath(__file__))
    if trainer == "purejaxppo":
        env["PYTHONPATH"] = os.path.dirname(here) + os.pathsep + env.get("PYTHONPATH", "")
    extra = ["--clip-per-network"] if clip_per_network and trainer == "purejaxppo" else []
    proc = subprocess.run([python, os.path.abspath(__file__), "--child", trainer, "--workload", name, *extra],
                          capture_output=True, text=True, env=env, cwd="/" if trainer == "rejax" else None)
    if proc.returncode != 0:
        raise RuntimeError(f"{trainer} on {name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rejax-python", help="a Python that imports rejax (its own virtual environment)")
    p.add_argument("--only", action="append", help="a workload name (repeatable); default: all")
    p.add_argument("--repeat", type=int, default=2, help="interleaved rounds; each row keeps its best round")
    p.add_argument("--tiny", action="store_true", help="tiny workloads (a check that both sides run)")
    p.add_argument("--json")
    p.add_argument("--label", default="", help="a note kept with the record (e.g. what else the machine ran)")
    p.add_argument("--clip-per-network", action="store_true",
                   help="purejaxppo clips the actor's and the critic's gradients apart, as Rejax does")
    p.add_argument("--child", choices=("purejaxppo", "rejax"), help=argparse.SUPPRESS)
    p.add_argument("--workload", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.workload, args.clip_per_network)), flush=True)
        return {}
    if not args.rejax_python:
        p.error("--rejax-python: the Python of an environment where rejax is installed")
    names = args.only or list(TINY if args.tiny else WORKLOADS)
    record = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "loadavg_start": os.getloadavg(), "date": time.strftime("%Y-%m-%d", time.gmtime()),
              "command": "python experiments/peer_rejax.py --rejax-python PATH " + " ".join(
                  f"--only '{n}'" for n in (args.only or [])) + f" --repeat {args.repeat}"
              + (" --tiny" if args.tiny else "") + (" --clip-per-network" if args.clip_per_network else ""),
              # purejaxppo's child builds its program with the layout this variable sets (core/tuning.py)
              "PUREJAXPPO_TUNING": os.environ.get("PUREJAXPPO_TUNING", ""),
              "note": "each workload in a fresh process per trainer, interleaved"
              + (f"; {args.label}" if args.label else ""),
              "runs": [], "rows": []}

    def save():
        if args.json:
            record["loadavg_end"] = os.getloadavg()
            with open(args.json, "w") as f:
                json.dump(record, f, indent=1)

    for _ in range(args.repeat):
        for name in names:
            for trainer, python in (("purejaxppo", sys.executable), ("rejax", args.rejax_python)):
                r = run_child(python, trainer, name, args.clip_per_network)
                record["runs"].append(r)
                print(json.dumps(r), flush=True)
                save()
    for name in names:
        best = {t: max((r for r in record["runs"] if r["workload"] == name and r["trainer"] == t),
                       key=lambda r: r["sps"]) for t in ("purejaxppo", "rejax")}
        row = {"workload": name, "purejaxppo_sps": best["purejaxppo"]["sps"], "rejax_sps": best["rejax"]["sps"],
               "ratio": best["purejaxppo"]["sps"] / best["rejax"]["sps"],
               "compile_s": [best["purejaxppo"]["compile_s"], best["rejax"]["compile_s"]],
               "eval_return": [best["purejaxppo"]["eval_return"], best["rejax"]["eval_return"]]}
        record["rows"].append(row)
        print(f"{name:<45} purejaxppo {row['purejaxppo_sps']:>12,.0f}  Rejax {row['rejax_sps']:>12,.0f}  "
              f"{row['ratio']:.2f}x  return {row['eval_return'][0]:.1f} / {row['eval_return'][1]:.1f}", flush=True)
    save()
    return record


if __name__ == "__main__":
    main()
