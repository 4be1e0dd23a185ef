"""Where one PPO update's time goes: each stage compiled and timed on its own, and the kernels.

An update is ``collect`` (the rollout), ``make_batch`` (values, GAE), and ``optimise``
(``update_epochs`` x (a shuffle of the batch, then ``num_minibatches`` gradient steps)).
This script builds the speed benchmark's workload (``experiments/benchmark_speed.py``: 128
steps, 4 epochs, 4 minibatches, 64x64 tanh MLPs), runs a few updates to reach a typical
state, and times, each compiled alone (median of repeated calls, compile excluded):

* ``update``: the whole update, as training runs it;
* ``collect``, ``make_batch``, ``optimise``: the stages (their sum can differ from ``update``:
  XLA fuses across stage boundaries inside one program);
* ``shuffle``: one epoch's permutation and gather of the batch, times ``update_epochs``;
* ``minibatch step``: one gradient step (forward, backward, clip, Adam), times the number of
  steps per update.

``--floors K`` also times the stages repeated K times inside one program (at small sizes the
call of a stage compiled alone costs as much as the stage), and two floors that no PPO with
these networks and this environment goes below: the environments' steps alone and plain
gradient steps alone (:func:`in_program_times`).

``--seeds S`` vmaps every stage over S seeds, as a sweep runs. ``--trace DIR`` also records a
profiler trace of a few whole updates and prints the operations that took the most time
(device kernels on a GPU; XLA's operations on the CPU).

    python experiments/profile_update.py --num-envs 64
    python experiments/profile_update.py --num-envs 4 --floors 50
    python experiments/profile_update.py --platform gpu --num-envs 16384 --trace /tmp/trace --json out.json
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import statistics
import sys
import time

from benchmark_speed import HPARAMS  # the speed benchmark's workload (this script's folder is on sys.path)


def timed(fn, *args, min_seconds: float = 1.0, max_reps: int = 200) -> float:
    """Median seconds of ``fn(*args)`` (compiled beforehand by one call), over repeated calls."""
    import jax

    jax.block_until_ready(fn(*args))
    times: list[float] = []
    total = 0.0
    while len(times) < 3 or (total < min_seconds and len(times) < max_reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
        total += times[-1]
    return statistics.median(times)


def stage_times(env: str, num_envs: int, seeds: int, warm_updates: int, floors: int = 0, row: str | None = None) -> dict:
    import jax

    from purejaxppo import HParams, PPOConfig
    from purejaxppo.core.feedforward import collect, make_batch
    from purejaxppo.core.stages import (
        MinibatchCarry,
        Optimiser,
        learning_rate,
        make_optimizer,
        minibatch_step,
        optimise,
    )
    from purejaxppo.core.train import init_state, make_parts, make_stages, update_state

    if row:  # a peer_brax.py row: the task's Brax preset at that row's size (8 minibatches, 4 epochs)
        from peer_brax import Row

        config = Row(row).config(0, 8, 4)
    else:
        config = PPOConfig(env=env, num_envs=num_envs, total_timesteps=num_envs * 128 * 100, **HPARAMS)
    parts = make_parts(config)
    hp = HParams.from_config(config)

    def per_seed(fn):  # vmap over seeds (stage arguments all carry the seed axis), then jit
        return jax.jit(jax.vmap(fn) if seeds > 1 else fn)

    keys = jax.random.split(jax.random.key(0), seeds) if seeds > 1 else jax.random.key(0)
    state = per_seed(lambda k: init_state(parts, k, hp))(keys)
    update = per_seed(lambda s: update_state(parts, make_stages(parts), s, hp))
    for _ in range(warm_updates):  # a typical state: some episodes ended, some truncated
        state, _ = update(state)
    jax.block_until_ready(state)

    def opt_for(s):
        return Optimiser(make_optimizer(hp, config.clip_per_network), learning_rate(config, hp, s.update_step), s.kl.coef, hp)

    collect_j = per_seed(lambda s: collect(parts, s, s.key))
    _, traj, _ = collect_j(state)
    batch_j = per_seed(lambda s, t: make_batch(parts, s, t, hp))
    _, batch = batch_j(state, traj)
    optimise_j = per_seed(lambda s, b: optimise(parts, opt_for(s), b, s.params, s.opt_state, s.key)[:2])

    def shuffle_one(b, key):
        order = parts.layout.permute(key, config.batch_size)
        return jax.tree_util.tree_map(lambda x: x[order], b)

    shuffle_j = per_seed(lambda b, s: shuffle_one(b, s.key))
    rows_axis = 1 if seeds > 1 else 0  # the first minibatch's rows of the (unshuffled) batch
    minibatch = jax.tree_util.tree_map(lambda x: jax.lax.slice_in_dim(x, 0, config.minibatch_size, axis=rows_axis),
                                       batch)
    step_j = per_seed(lambda s, mb: minibatch_step(parts, opt_for(s), MinibatchCarry(s.params, s.opt_state), mb)[0])

    steps = config.update_epochs * config.num_minibatches
    rows = {
        "update": timed(update, state),
        "collect": timed(collect_j, state),
        "make_batch": timed(batch_j, state, traj),
        "optimise": timed(optimise_j, state, batch),
        "shuffle (x epochs)": config.update_epochs * timed(shuffle_j, batch, state),
        "minibatch step (x steps)": steps * timed(step_j, state, minibatch),
    }
    out = dict(seconds=rows, env_steps=config.batch_size * seeds, tuning=parts.tuning.__dict__,
               state=state, update=update)
    if floors:
        out["in_one_program"] = in_program_times(parts, hp, opt_for, state, batch, minibatch, repeats=floors)
    return out


def in_program_times(parts, hp, opt_for, state, batch, minibatch, repeats: int) -> dict[str, float]:
    """Seconds per update of the stages, each repeated ``repeats`` times inside one compiled
    program (no call per stage: at small sizes a call costs as much as a stage), and two floors:

    * ``floor: environment steps``: the update's ``num_steps`` steps of the environments alone,
      with fixed actions (keys drawn beforehand, no policy);
    * ``floor: gradient steps``: the update's minibatch steps with the same networks and
      nothing else: the gradient of a plain loss (the actions' log-probability and the
      values' squared error) and an SGD step, no PPO loss, clipping or Adam.

    No PPO implementation with these networks and this environment does an update in less
    than the two floors together, on this machine and JAX.
    """
    import jax
    import jax.numpy as jnp

    from purejaxppo.core.feedforward import collect, make_batch
    from purejaxppo.core.networks import ActorCritic
    from purejaxppo.core.stages import optimise
    from purejaxppo.core.train import make_stages, update_state

    config, network, dist = parts.config, parts.network, parts.dist
    steps = config.update_epochs * config.num_minibatches

    def env_steps(s):
        keys = jax.random.split(s.key, (config.num_steps, parts.num_local_envs))
        actions = jnp.zeros((config.num_steps,) + batch.action.shape[1:], batch.action.dtype)

        def one(env_state, x):
            k, a = x
            out = parts.vstep(k, env_state, jnp.broadcast_to(a, (parts.num_local_envs,) + a.shape))
            return out[1], (out[0], out[2])  # observations too: a constant reward alone is dead code

        return jax.lax.scan(one, s.env_state, (keys, actions))[1]

    def gradient_steps(s):  # the params are carried from repeat to repeat (nothing to hoist out of the loop)
        def loss(params):
            pi = network.apply(params, minibatch.obs, method=ActorCritic.policy)
            value = network.apply(params, minibatch.obs, method=ActorCritic.value)
            return -jnp.mean(dist.log_prob(pi, minibatch.action)) + jnp.mean(jnp.square(value - minibatch.target))

        def one(params, _):
            grads = jax.grad(loss)(params)
            return jax.tree_util.tree_map(lambda p, g: p - 1e-3 * g, params, grads), None

        return jax.lax.scan(one, s.params, None, length=steps)[0]

    def gradient_floor(s):
        params = gradient_steps(s)
        return s.replace(params=params), params

    stages = {  # each returns (the state the next repeat starts from, or None for the same; outputs)
        "update": lambda s: update_state(parts, make_stages(parts), s, hp),
        "collect": lambda s: (None, (lambda t: (t.obs, t.reward))(collect(parts, s, s.key)[1])),
        "collect + make_batch": lambda s: (None, make_batch(parts, s, collect(parts, s, s.key)[1], hp)[1]),
        "optimise": lambda s: (None, optimise(parts, opt_for(s), batch, s.params, s.opt_state, s.key)[0]),
        "floor: environment steps": lambda s: (None, env_steps(s)),
        "floor: gradient steps": gradient_floor,
    }
    if config.env.startswith("brax/"):  # the same steps through Brax's own training wrappers (its trainer's)
        stages["floor: Brax-wrapped environment steps"] = brax_wrapped_steps(config, batch.action.shape[1:])

    def repeated(body):
        def run(s):
            def one(i, carry):  # a fresh key each time, every output used, the state carried where it changes
                acc, s = carry
                new, out = body(s.replace(key=jax.random.fold_in(s.key, i)))
                acc = acc + sum(jnp.sum(x).astype(jnp.float32) for x in jax.tree_util.tree_leaves(out))
                return acc, (s if new is None else new.replace(key=s.key))

            return jax.lax.fori_loop(0, repeats, one, (jnp.float32(0), s))[0]

        return jax.jit(run)

    return {name: timed(repeated(body), state) / repeats for name, body in stages.items()}


def brax_wrapped_steps(config, action_shape):
    """The floor's environment steps as Brax's PPO trainer takes them: its task under
    ``brax.envs.training.wrap`` (an episode limit of 1000, vmapped, and ``AutoResetWrapper``, which
    puts an ended environment back to the first state it was reset to: no fresh reset per step).
    Every repeat steps from freshly reset states, where the other floor steps on from the state
    training reached (docs/speed.md says so beside the figures; ``physics_cost.py`` compares both
    steppers from the same states)."""
    import jax
    import jax.numpy as jnp
    from brax import envs

    task, backend = config.env.split("/", 1)[1].rsplit("-", 1)
    env = envs.training.wrap(envs.get_environment(task, backend=backend), episode_length=1000)
    first = jax.jit(env.reset)(jax.random.split(jax.random.PRNGKey(0), config.num_envs))

    def body(s):  # zero actions, as the other floor takes, made from this repeat's key (nothing to hoist)
        actions = 0.0 * jax.random.uniform(s.key, (config.num_steps, config.num_envs) + action_shape)

        def one(state, a):
            state = env.step(state, a)
            return state, (state.obs, state.reward)

        return None, jax.lax.scan(one, first, actions)[1]

    return body


def trace_summary(trace_dir: str, top: int) -> dict[str, list[dict]]:
    """Total time per name in the newest perfetto trace under ``trace_dir``, per kind of track.

    On a GPU: ``kernels`` (the device's stream tracks) and ``xla ops`` (the HLO operations they
    belong to, where the trace has that track). On the CPU: ``xla ops`` are the operations
    run by XLA's host threads (Python's own events left out).
    """
    files = sorted(glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True),
                   key=os.path.getmtime)
    if not files:
        return {}
    with gzip.open(files[-1], "rt") as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    processes, threads = {}, {}
    for e in events:
        if e.get("ph") == "M" and e.get("name") == "process_name":
            processes[e["pid"]] = e.get("args", {}).get("name", "")
        if e.get("ph") == "M" and e.get("name") == "thread_name":
            threads[(e["pid"], e["tid"])] = e.get("args", {}).get("name", "")
    device = {pid for pid, name in processes.items() if name.startswith("/device:") and "CPU" not in name}

    def track(e) -> str | None:
        thread = threads.get((e.get("pid"), e.get("tid")), "")
        if e.get("pid") in device:
            if "XLA Ops" in thread:
                return "xla ops"
            return "kernels" if thread.startswith("Stream") else None
        if not device and thread.startswith("tf_XLA") and not e.get("name", "").startswith(("$", "ThunkExecutor")):
            return "xla ops"
        return None

    totals: dict[str, dict[str, list]] = collections.defaultdict(lambda: collections.defaultdict(lambda: [0.0, 0]))
    for e in events:
        kind = track(e) if e.get("ph") == "X" and "dur" in e else None
        if kind:
            entry = totals[kind][e["name"]]
            entry[0] += float(e["dur"])
            entry[1] += 1
    out = {}
    for kind, names in totals.items():
        grand = sum(us for us, _ in names.values()) or 1.0
        order = sorted(names, key=lambda n: names[n][0], reverse=True)[:top]
        out[kind] = [dict(name=n, us=names[n][0], calls=names[n][1], share=names[n][0] / grand) for n in order]
        out[kind + " total us"] = grand
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--platform", choices=["cpu", "gpu", "tpu"], default="cpu")
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--row", help="instead of --env/--num-envs: a Brax row of peer_brax.py, TASK-BACKEND:ENVS:UNROLL:STEPS")
    parser.add_argument("--seeds", type=int, default=1, help="vmap every stage over this many seeds")
    parser.add_argument("--warm-updates", type=int, default=5, help="updates run before timing (default 5)")
    parser.add_argument("--trace", metavar="DIR", help="also record a profiler trace here and list its top operations")
    parser.add_argument("--top", type=int, default=25, help="operations listed from the trace (default 25)")
    parser.add_argument("--floors", type=int, default=0, metavar="K",
                        help="also time the stages repeated K times inside one program, and the floors: the "
                             "environment steps alone and plain gradient steps alone (one seed)")
    parser.add_argument("--json", metavar="FILE", help="write every figure here too")
    args = parser.parse_args()
    if args.platform != "gpu":
        os.environ.setdefault("JAX_PLATFORMS", args.platform)
    import jax

    if jax.default_backend() != args.platform:
        raise SystemExit(f"--platform {args.platform}: JAX runs on {jax.default_backend()} here")
    if args.floors and args.seeds > 1:
        raise SystemExit("--floors: with --seeds 1 only")
    if args.row:
        from peer_brax import Row

        try:
            Row(args.row)
        except ValueError as e:
            parser.error(f"--row {args.row!r}: {e}")
    out = stage_times(args.env, args.num_envs, args.seeds, args.warm_updates, args.floors, args.row)
    state, update = out.pop("state"), out.pop("update")
    device = jax.devices()[0]
    label = args.row or f"{args.env}, {f'{args.seeds} seeds x ' if args.seeds > 1 else ''}{args.num_envs} envs"
    print(f"{label} on {getattr(device, 'device_kind', device)} ({jax.default_backend()}), "
          f"tuning {out['tuning']}")
    total = out["seconds"]["update"]
    print(f"{'stage':<28} {'ms per update':>14} {'share of update':>16}")
    for name, s in out["seconds"].items():
        print(f"{name:<28} {1e3 * s:>14.3f} {s / total:>15.0%}")
    print(f"env steps/s of the update alone: {out['env_steps'] / total:,.0f}")
    if "in_one_program" in out:
        inside = out["in_one_program"]
        print(f"in one program ({args.floors} repeats, no call per stage):")
        for name, s in inside.items():
            print(f"{name:<28} {1e3 * s:>14.3f} {s / inside['update']:>15.0%}")
        floor = inside["floor: environment steps"] + inside["floor: gradient steps"]
        print(f"env steps/s of the update in one program: {out['env_steps'] / inside['update']:,.0f}; "
              f"the two floors together allow at most {out['env_steps'] / floor:,.0f}")
    if args.trace:
        n = 5
        with jax.profiler.trace(args.trace, create_perfetto_trace=True):
            for _ in range(n):
                state, _ = update(state)
            jax.block_until_ready(state)
        summary = trace_summary(args.trace, args.top)
        out["trace_top"] = summary
        for kind in ("kernels", "xla ops"):
            if kind not in summary:
                continue
            print(f"{kind}: {summary[kind + ' total us'] / n / 1e3:.2f} ms per update in all; the largest "
                  f"(trace of {n} updates in {args.trace}):")
            print(f"{'us per update':>14} {'calls':>7} {'share':>6}  name")
            for op in summary[kind]:
                print(f"{op['us'] / n:>14.1f} {op['calls'] // n:>7} {op['share']:>6.1%}  {op['name'][:100]}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(workload=label, device=str(getattr(device, "device_kind", device)),
                           backend=jax.default_backend(), command=sys.argv, **out), f, indent=2)


if __name__ == "__main__":
    main()
