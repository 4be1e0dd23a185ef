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

``--seeds S`` vmaps every stage over S seeds, as a sweep runs. ``--trace DIR`` also records a
profiler trace of a few whole updates and prints the operations that took the most time
(device kernels on a GPU; XLA's operations on the CPU).

    python experiments/profile_update.py --num-envs 64
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


def stage_times(env: str, num_envs: int, seeds: int, warm_updates: int) -> dict:
    import jax

    from purejaxppo import HParams, PPOConfig
    from purejaxppo.core.batch import make_batch
    from purejaxppo.core.parts import make_parts
    from purejaxppo.core.rollout import collect
    from purejaxppo.core.train import init_state, update_state
    from purejaxppo.core.update import (
        MinibatchCarry,
        Optimiser,
        epoch_order,
        learning_rate,
        make_optimizer,
        minibatch_step,
        optimise,
    )

    config = PPOConfig(env=env, num_envs=num_envs, total_timesteps=num_envs * 128 * 100, **HPARAMS)
    parts = make_parts(config)
    hp = HParams.from_config(config)

    def per_seed(fn):  # vmap over seeds (stage arguments all carry the seed axis), then jit
        return jax.jit(jax.vmap(fn) if seeds > 1 else fn)

    keys = jax.random.split(jax.random.key(0), seeds) if seeds > 1 else jax.random.key(0)
    state = per_seed(lambda k: init_state(parts, k, hp))(keys)
    update = per_seed(lambda s: update_state(parts, s, hp))
    for _ in range(warm_updates):  # a typical state: some episodes ended, some truncated
        state, _ = update(state)
    jax.block_until_ready(state)

    def opt_for(s):
        return Optimiser(make_optimizer(hp), learning_rate(config, hp, s.update_step), s.kl.coef, hp)

    collect_j = per_seed(lambda s: collect(parts, s, s.key))
    _, traj, _ = collect_j(state)
    batch_j = per_seed(lambda s, t: make_batch(parts, s, t, hp))
    _, batch = batch_j(state, traj)
    optimise_j = per_seed(lambda s, b: optimise(parts, opt_for(s), b, s.params, s.opt_state, s.key)[:2])

    def shuffle_one(b, key):
        order = epoch_order(parts, key)
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
    return dict(seconds=rows, env_steps=config.batch_size * seeds, tuning=parts.tuning.__dict__,
                state=state, update=update)


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
    parser.add_argument("--seeds", type=int, default=1, help="vmap every stage over this many seeds")
    parser.add_argument("--warm-updates", type=int, default=5, help="updates run before timing (default 5)")
    parser.add_argument("--trace", metavar="DIR", help="also record a profiler trace here and list its top operations")
    parser.add_argument("--top", type=int, default=25, help="operations listed from the trace (default 25)")
    parser.add_argument("--json", metavar="FILE", help="write every figure here too")
    args = parser.parse_args()
    if args.platform != "gpu":
        os.environ.setdefault("JAX_PLATFORMS", args.platform)
    import jax

    if jax.default_backend() != args.platform:
        raise SystemExit(f"--platform {args.platform}: JAX runs on {jax.default_backend()} here")
    out = stage_times(args.env, args.num_envs, args.seeds, args.warm_updates)
    state, update = out.pop("state"), out.pop("update")
    device = jax.devices()[0]
    label = f"{args.env}, {f'{args.seeds} seeds x ' if args.seeds > 1 else ''}{args.num_envs} envs"
    print(f"{label} on {getattr(device, 'device_kind', device)} ({jax.default_backend()}), "
          f"tuning {out['tuning']}")
    total = out["seconds"]["update"]
    print(f"{'stage':<28} {'ms per update':>14} {'share of update':>16}")
    for name, s in out["seconds"].items():
        print(f"{name:<28} {1e3 * s:>14.3f} {s / total:>15.0%}")
    print(f"env steps/s of the update alone: {out['env_steps'] / total:,.0f}")
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
