"""Speed benchmark: compile time and env steps per second of purejaxppo and its peers, side by side.

Every workload is PPO with 128 steps per env per update, 4 epochs, 4 minibatches, 64x64 tanh
MLPs, lr 2.5e-4 annealed, gamma 0.99, lambda 0.95, clip 0.2, entropy 0.01, max grad norm 0.5,
for every trainer. ``--platform`` picks the workload sizes:

* ``cpu`` (default): CartPole-v1 with 4, 64 and 2048 environments, Breakout-MinAtar with 128;
  purejaxppo's Breakout-MinAtar preset (256x256 relu, 8 minibatches) as an extra row;
* ``gpu`` / ``tpu``: sizes that fill an accelerator: CartPole-v1 with 2048 envs (10.5M steps),
  Breakout-MinAtar with 1024 (5.2M), 256 seeds vmapped x 64 envs (1M steps each), 64 envs
  (2.1M), 16384 envs (42M).

Trainers, each workload in its own fresh process, one after another (never side by side):

* purejaxppo, with the tuning of the backend (``purejaxppo/core/tuning.py``), and any
  ``--variant NAME=TUNING`` (e.g. ``--variant "no-unroll=gae_unroll=1"``);
* PureJaxRL's ``purejaxrl/ppo.py`` from a checkout (``--purejaxrl PATH``), run unchanged through
  ``experiments/peer_purejaxrl.py`` (its adaptations to today's libraries are printed);
* Stable-Baselines3 PPO on Gymnasium's CartPole-v1 (``--sb3``, CPU only; needs
  ``pip install -e ".[bench]"`` and a CPU build of torch);
* any trainer that prints one JSON line with ``sps`` (``--peer NAME=COMMAND``, on the
  CartPole-v1 64-env workload);
* purejaxppo from another checkout of this repository (``--baseline NAME=PATH``, e.g. a
  ``git worktree`` of an earlier commit), on every workload: before and after a change, side by side.

Each row is the best of two timed runs after compilation; ``--repeat K`` runs the whole list
K times, interleaved, and keeps each row's best round (timings on a shared machine vary by
10-20%). "final return" is the mean return of the episodes that ended in the last update.
The table goes to stdout; ``--json FILE`` also writes the device, the library versions and
every figure.

    python experiments/benchmark_speed.py --sb3 --purejaxrl /path/to/purejaxrl --repeat 3
    python experiments/benchmark_speed.py --platform gpu --purejaxrl /path/to/purejaxrl --json gpu.json
    python experiments/benchmark_speed.py --quick          # a smoke run of the script
    git worktree add /tmp/before COMMIT && python experiments/benchmark_speed.py --baseline before=/tmp/before --repeat 3
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform as platform_module
import resource
import shlex
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
HPARAMS = dict(num_steps=128, update_epochs=4, num_minibatches=4, lr=2.5e-4)
BACKENDS = {"cpu": "cpu", "gpu": "gpu", "tpu": "tpu"}


@dataclasses.dataclass(frozen=True)
class Workload:
    env: str
    num_envs: int
    updates: int
    seeds: int = 1
    preset: bool = False  # purejaxppo's preset for the env instead of the shared hyperparameters
    peers: bool = True  # whether the peers run it too

    @property
    def label(self) -> str:
        envs = f"{self.seeds} seeds x {self.num_envs} envs" if self.seeds > 1 else f"{self.num_envs} envs"
        return f"{self.env}{' (preset)' if self.preset else ''}, {envs}"

    @property
    def env_steps(self) -> int:
        return self.num_envs * 128 * self.updates * self.seeds


WORKLOADS = {
    "cpu": [
        Workload("CartPole-v1", 4, 200),
        Workload("CartPole-v1", 64, 60),
        Workload("CartPole-v1", 2048, 10),
        Workload("Breakout-MinAtar", 128, 10),
        Workload("Breakout-MinAtar", 128, 10, preset=True, peers=False),
        Workload("brax/inverted_pendulum", 256, 3, preset=True, peers=False),  # needs the [brax] extra
    ],
    "gpu": [
        Workload("CartPole-v1", 2048, 40),
        Workload("Breakout-MinAtar", 1024, 40),
        Workload("CartPole-v1", 64, 122, seeds=256),
        Workload("CartPole-v1", 64, 256),
        Workload("CartPole-v1", 16384, 20),
        # Brax tasks with Brax's settings (the [brax] extra; PureJaxRL's Brax path is not run)
        Workload("brax/hopper", 2048, 10, preset=True, peers=False),
        Workload("brax/ant", 4096, 10, preset=True, peers=False),
    ],
}
WORKLOADS["tpu"] = WORKLOADS["gpu"]


def quick(w: Workload) -> Workload:
    return dataclasses.replace(w, updates=min(w.updates, 2), seeds=min(w.seeds, 4))


# ---- the cases, each run in a child process ------------------------------------------------------


def device_info() -> dict:
    import jax

    d = jax.devices()[0]
    return dict(backend=jax.default_backend(), device=getattr(d, "device_kind", str(d)), device_count=jax.device_count())


def case_purejaxppo(w: Workload) -> dict:
    import jax
    import numpy as np

    from purejaxppo import HParams, PPOConfig
    from purejaxppo import preset as get_preset
    from purejaxppo.core.train import make_trainer

    base = get_preset(w.env) if w.preset else PPOConfig(env=w.env, **HPARAMS)
    config = base.replace(num_envs=w.num_envs, total_timesteps=w.num_envs * base.num_steps * w.updates)
    trainer = make_trainer(config)
    hp = HParams.from_config(config)
    train = trainer.train
    if w.seeds > 1:
        train = jax.vmap(train, in_axes=(0, None))

    def keys(i):
        return jax.random.split(jax.random.key(i), w.seeds) if w.seeds > 1 else jax.random.key(i)

    rss_before = _peak_rss_mb()
    t0 = time.perf_counter()
    compiled = jax.jit(train).lower(keys(0), hp).compile()
    compile_seconds = time.perf_counter() - t0
    best, metrics = float("inf"), None
    for i in range(2):
        t0 = time.perf_counter()
        _, metrics = jax.block_until_ready(compiled(keys(i + 1), hp))
        best = min(best, time.perf_counter() - t0)
    steps = config.num_updates * config.batch_size * w.seeds
    from purejaxppo.core.tuning import tuning_for

    return dict(
        compile_seconds=compile_seconds,
        sps=steps / best,
        env_steps=steps,
        final_return=float(np.nanmean(np.asarray(metrics["charts/episodic_return"])[..., -1])),
        peak_rss_mb=_peak_rss_mb(),
        rss_after_import_mb=rss_before,
        tuning=dataclasses.asdict(tuning_for()),
        **device_info(),
    )


def case_sb3(w: Workload) -> dict:
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(os.cpu_count() or 1)
    n_steps, num_envs = 128, w.num_envs
    vec = make_vec_env("CartPole-v1", n_envs=num_envs, seed=0)
    model = PPO(
        "MlpPolicy",
        vec,
        n_steps=n_steps,
        batch_size=num_envs * n_steps // 4,
        n_epochs=4,
        learning_rate=lambda f: 2.5e-4 * f,
        gamma=0.99,
        gae_lambda=0.95,
        clip_range=0.2,
        ent_coef=0.01,
        vf_coef=0.5,
        max_grad_norm=0.5,
        policy_kwargs=dict(net_arch=dict(pi=[64, 64], vf=[64, 64]), activation_fn=torch.nn.Tanh),
        device="cpu",
        seed=0,
        verbose=0,
    )
    total = min(w.env_steps, 40960 if num_envs <= 4 else 81920)  # SB3 is slow: a shorter run of it
    t0 = time.perf_counter()
    model.learn(total_timesteps=total)
    seconds = time.perf_counter() - t0
    steps = (total + num_envs * n_steps - 1) // (num_envs * n_steps) * num_envs * n_steps
    return dict(compile_seconds=0.0, sps=steps / seconds, env_steps=steps, peak_rss_mb=_peak_rss_mb())


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---- the driver ----------------------------------------------------------------------------------


def _last_json(proc: subprocess.CompletedProcess) -> dict:
    if proc.returncode != 0:
        return dict(error=(proc.stderr.strip().splitlines() or ["failed"])[-1])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_child(argv: list[str], env: dict | None = None) -> dict:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=3600, env=env)
    return _last_json(proc)


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform_module.python_version()}
    for name in ("jax", "jaxlib", "flax", "optax", "gymnax", "torch", "stable-baselines3"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--platform", choices=sorted(BACKENDS), default="cpu",
                        help="the workload sizes, and the backend every case must run on (default cpu)")
    parser.add_argument("--any-backend", action="store_true", help=argparse.SUPPRESS)  # run a list elsewhere
    parser.add_argument("--quick", action="store_true", help="at most 2 updates and 4 seeds, to check the script")
    parser.add_argument("--only", action="append", default=[], metavar="TEXT",
                        help="run only the workloads whose label contains TEXT (repeatable)")
    parser.add_argument("--purejaxrl", metavar="PATH", help="a checkout of PureJaxRL to run as a peer")
    parser.add_argument("--sb3", action="store_true", help="also run Stable-Baselines3 PPO (CPU, CartPole-v1)")
    parser.add_argument("--peer", action="append", default=[], metavar="NAME=COMMAND",
                        help="another trainer for the CartPole-v1 64-env workload; prints a JSON line with sps")
    parser.add_argument("--baseline", action="append", default=[], metavar="NAME=PATH",
                        help="purejaxppo again from the checkout at PATH (e.g. a git worktree of an earlier commit)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=TUNING",
                        help="purejaxppo again with PUREJAXPPO_TUNING=TUNING (purejaxppo/core/tuning.py)")
    parser.add_argument("--variants-only-on", action="append", default=[], metavar="TEXT",
                        help="run the variants only on the workloads whose label contains TEXT (repeatable)")
    parser.add_argument("--json", metavar="FILE", help="also write the device, versions and every figure here")
    parser.add_argument("--repeat", type=int, default=1, metavar="K",
                        help="run the whole list K times, interleaved, and keep each row's best round")
    args = parser.parse_args()

    if args.case:
        spec = json.loads(args.case)
        trainer, w = spec.pop("trainer"), Workload(**spec)
        result = case_purejaxppo(w) if trainer == "purejaxppo" else case_sb3(w)
        print(json.dumps(result))
        return

    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    if args.purejaxrl and not os.path.isfile(os.path.join(args.purejaxrl, "purejaxrl", "ppo.py")):
        parser.error(f"--purejaxrl: no purejaxrl/ppo.py under {args.purejaxrl!r}; give a checkout of PureJaxRL")
    if args.sb3 and args.platform != "cpu":
        parser.error("--sb3 runs on the CPU only; use it with --platform cpu")
    def named(flag: str, specs: list[str], what: str) -> list[tuple[str, str]]:
        pairs = [spec.partition("=") for spec in specs]
        for spec, (name, sep, _) in zip(specs, pairs):
            if not sep or not name:
                parser.error(f"{flag}: expected NAME={what}, got {spec!r}")
        return [(name, value) for name, _, value in pairs]

    variants = named("--variant", args.variant, "TUNING")
    peers = named("--peer", args.peer, "COMMAND")
    baselines = named("--baseline", args.baseline, "PATH")
    for name, path in baselines:
        if not os.path.isfile(os.path.join(path, "purejaxppo", "core", "train.py")):
            parser.error(f"--baseline {name}: no purejaxppo/core/train.py under {path!r}; give a checkout of purejaxppo")

    workloads = [quick(w) if args.quick else w for w in WORKLOADS[args.platform]]
    if args.only:
        workloads = [w for w in workloads if any(t in w.label for t in args.only)]
        if not workloads:
            parser.error(f"--only: no workload matches {args.only}")

    base_env = dict(os.environ)
    base_env.pop("PUREJAXPPO_TUNING", None)
    if args.platform != "gpu" and not args.any_backend:
        base_env["JAX_PLATFORMS"] = args.platform

    def ours(w: Workload, tuning: str | None = None, checkout: str | None = None):
        env = dict(base_env, PUREJAXPPO_TUNING=tuning) if tuning else base_env
        if checkout:  # that checkout's package first on the path
            env = dict(env, PYTHONPATH=os.pathsep.join(filter(None, [checkout, env.get("PYTHONPATH")])))
        spec = json.dumps(dict(dataclasses.asdict(w), trainer="purejaxppo"))
        return lambda: run_child([sys.executable, os.path.abspath(__file__), "--case", spec], env)

    jobs = []  # (workload, trainer name, thunk)
    for w in workloads:
        jobs.append((w, "purejaxppo", ours(w)))
        for name, path in baselines:
            jobs.append((w, f"purejaxppo @{name}", ours(w, checkout=os.path.abspath(path))))
        for name, tuning in variants:
            if args.variants_only_on and not any(t in w.label for t in args.variants_only_on):
                continue
            jobs.append((w, f"purejaxppo [{name}]", ours(w, tuning)))
        if args.purejaxrl and w.peers:
            argv = [sys.executable, os.path.join(HERE, "peer_purejaxrl.py"), "--checkout", args.purejaxrl,
                    "--env", w.env, "--num-envs", str(w.num_envs), "--updates", str(w.updates),
                    "--seeds", str(w.seeds)]
            jobs.append((w, "PureJaxRL ppo.py", lambda argv=argv: run_child(argv, base_env)))
        if args.sb3 and w.env == "CartPole-v1" and w.num_envs in (4, 64) and w.seeds == 1:
            spec = json.dumps(dict(dataclasses.asdict(w), trainer="sb3"))
            jobs.append((w, "Stable-Baselines3 PPO", lambda spec=spec: run_child(
                [sys.executable, os.path.abspath(__file__), "--case", spec], base_env)))
        if w.env == "CartPole-v1" and w.num_envs == 64 and w.seeds == 1:
            for name, command in peers:
                jobs.append((w, name, lambda command=command: run_child(shlex.split(command), base_env)))

    best: list[dict | None] = [None] * len(jobs)
    for round_ in range(args.repeat):
        for i, (w, name, job) in enumerate(jobs):
            print(f"[round {round_ + 1}/{args.repeat}] {name}: {w.label} ...", file=sys.stderr, flush=True)
            r = dict(workload=w.label, trainer=name, **job())
            if best[i] is None or ("sps" in r and r["sps"] > best[i].get("sps", -1.0)):
                best[i] = r
            if args.json:  # what is measured so far, in case the list is cut short
                write_json(args, [r for r in best if r is not None], device="(incomplete)")
    rows = [r for r in best if r is not None]

    if not args.any_backend:
        wrong = {r.get("backend") for r in rows if r.get("backend") not in (None, BACKENDS[args.platform])}
        if wrong:
            raise SystemExit(f"--platform {args.platform}: the cases ran on {', '.join(sorted(wrong))}; "
                             "install JAX for that backend or pick the platform this machine has")
    device = next((f"{r['device']} x{r['device_count']}" for r in rows if "device" in r), "unknown")
    print(f"device: {device}; {', '.join(f'{k} {v}' for k, v in versions().items())}")
    notes = next((r["adaptations"] for r in rows if "adaptations" in r), None)
    if notes:
        print("PureJaxRL adaptations: " + "; ".join(notes))
    print(f"{'workload':<40} {'trainer':<28} {'compile s':>9} {'env steps/s':>13} {'final return':>12} "
          f"{'purejaxppo / this':>17}")
    ours_sps = {r["workload"]: r["sps"] for r in rows if r["trainer"] == "purejaxppo" and "sps" in r}
    for r in rows:
        if "error" in r:
            print(f"{r['workload']:<40} {r['trainer']:<28} failed: {r['error']}")
            continue
        ratio = ""
        if r["trainer"] != "purejaxppo" and r["workload"] in ours_sps:
            ratio = f"{ours_sps[r['workload']] / r['sps']:.2f}x"
        ret = r.get("final_return")
        print(f"{r['workload']:<40} {r['trainer']:<28} {r.get('compile_seconds', 0):>9.1f} {r['sps']:>13,.0f} "
              f"{(f'{ret:.1f}' if ret is not None else '-'):>12} {ratio:>17}")
    if args.json:
        write_json(args, rows, device)


def write_json(args: argparse.Namespace, rows: list[dict], device: str) -> None:
    with open(args.json, "w") as f:
        json.dump(dict(platform=args.platform, device=device, versions=versions(), command=sys.argv,
                       repeat=args.repeat, rows=rows), f, indent=2)


if __name__ == "__main__":
    main()
