"""Brax's own PPO trainer (``brax.training.agents.ppo.train``) side by side with purejaxppo on Brax tasks
and MuJoCo Playground's DM Control tasks.

    python experiments/peer_brax.py --row hopper-positional:256:20:409600 --seeds 0 1 2 \\
        --json results/speed/cpu_xeon_peer_brax.json
    python experiments/peer_brax.py --row playground/CartpoleBalance:256:30:983040 --epochs 16 \\
        --json results/speed/cpu_xeon_peer_playground.json

A row is ``TASK-BACKEND:ENVS:UNROLL:STEPS`` (a Brax task) or ``playground/TASK:ENVS:UNROLL:STEPS``
(Playground, MJX's JAX implementation, with Playground's own settings for the task as the base).
Playground's users train with Brax's trainer through Playground's own wrapper
(``wrapper.wrap_for_brax_training``: the task's episode length and action repeat, and an automatic
reset to each environment's cached first state), and so does this script. Both trainers get the same task and physics backend, the
same number of environments, unroll length (purejaxppo's ``num_steps``: one unroll per environment
per update, so both bootstrap GAE at the same place), minibatches, epochs and networks: every other
setting is the task's Brax preset (``purejaxppo/core/presets.py``, translated from Brax's training
notebook), given to Brax's trainer under its own names (the table is ``brax_kwargs``). Brax's
``batch_size`` is ``ENVS / minibatches`` unrolls, so one of its training steps is one of our updates.
One difference stays: purejaxppo bootstraps time-limit truncations from the final observation; Brax's
trainer can only where the environment reports ``info["time_out"]``, which its own Brax tasks
(hopper, ant) do not, so it runs with its default (``bootstrap_on_timeout=False``).

Per seed the two run one after the other (ours, Brax, ours, Brax ...) in this process, and each
reports env steps/s two ways, the same for both:

* ``sps``: compiled training, over the third and fourth quarters of the run for both. Brax: its
  third and fourth training epochs (``num_evals=5`` gives four epochs of a quarter of the steps
  each), timed by Brax itself (``training/walltime``); on JAX 0.10 its first two epochs both
  compile the training epoch (the second call traces it again), so both are left out.
  purejaxppo: the same quarters, from one compiled program of a quarter of the updates, called
  four times (``sps_all``: all four). The same quarters matter: a physics step's cost changes
  as the policy learns (MJX's solver iterates until it converges);
* ``launch_sps``: steps over the wall time of the whole trainer call, compilation included.

The final policies of both are scored by the same judge: Brax's ``acting.Evaluator`` (``--eval-envs``
episodes of at most 1000 steps, deterministic actions: the tanh of the Gaussian's mean), built once per
trainer and row. Brax's own evaluations during training are off.

Brax 0.14.2's trainer calls ``jax.device_put_replicated`` (and its ``pmap`` helpers
``jax.device_put_sharded``), which JAX 0.10 removed: this script defines its own stand-ins
(stack the value once per device and place it), used only when JAX lacks them.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np


def _placed(stacked, devices):
    """Arrays with a leading device axis laid out as ``jax.pmap``'s own outputs are (an identity
    ``pmap``): given any other placement, the trainer's ``pmap`` would compile a second program for
    its second call."""
    return jax.pmap(lambda a: a, devices=devices)(stacked)


def _replicated(x, devices):
    """Stand-in for the removed ``jax.device_put_replicated``: ``x`` stacked once per device."""
    return _placed(jax.tree_util.tree_map(lambda a: jnp.stack([jnp.asarray(a)] * len(devices)), x), devices)


def _sharded(shards, devices):
    """Stand-in for the removed ``jax.device_put_sharded``: the shards stacked along a new axis."""
    return _placed(jax.tree_util.tree_map(lambda *a: jnp.stack([jnp.asarray(s) for s in a]), *shards), devices)


for _name, _fn in (("device_put_replicated", _replicated), ("device_put_sharded", _sharded)):
    if not hasattr(jax, _name):
        setattr(jax, _name, _fn)
STAND_INS = [n for n, f in (("device_put_replicated", _replicated), ("device_put_sharded", _sharded))
             if getattr(jax, n) is f]


class Row:
    """A row ``TASK-BACKEND:ENVS:UNROLL:STEPS`` (a Brax task) or ``playground/TASK:ENVS:UNROLL:STEPS``
    (a MuJoCo Playground DM Control task, its JAX implementation); a malformed one is a one-line
    ``ValueError``."""

    def __init__(self, spec: str):
        from purejaxppo.naming import PLAYGROUND_PREFIX

        try:
            name, envs, unroll, steps = spec.split(":")
            self.playground = name.startswith(PLAYGROUND_PREFIX)
            if self.playground:
                self.task, self.backend = name[len(PLAYGROUND_PREFIX):], "jax"
                self.env = self.preset = name
            else:
                self.task, self.backend = name.rsplit("-", 1)
                self.env, self.preset = f"brax/{self.task}-{self.backend}", f"brax/{self.task}"
            self.num_envs, self.unroll, self.steps = int(envs), int(unroll), int(steps)
        except ValueError:
            raise ValueError("accepted: TASK-BACKEND:ENVS:UNROLL:STEPS or playground/TASK:ENVS:UNROLL:STEPS with whole "
                             "numbers, e.g. hopper-positional:256:20:102400") from None
        self.spec = spec

    def config(self, seed: int, minibatches: int, epochs: int, reset_ratio: int = 1):
        from purejaxppo import preset

        return preset(self.preset).replace(
            env=self.env, seed=seed, num_envs=self.num_envs, num_steps=self.unroll,
            num_minibatches=minibatches, update_epochs=epochs, total_timesteps=self.steps, reset_ratio=reset_ratio)

    def brax_env(self):
        """The environment Brax's trainer gets, and the wrapper it trains it in (None: Brax's own):
        for Playground, its own training path (``wrapper.wrap_for_brax_training``: the episode
        limit, and an auto-reset to each environment's cached first state)."""
        if self.playground:
            from mujoco_playground import dm_control_suite, wrapper

            return dm_control_suite.load(self.task, config_overrides={"impl": "jax"}), wrapper.wrap_for_brax_training
        from brax import envs

        return envs.get_environment(self.task, backend=self.backend), None

    def episode(self) -> tuple[int, int]:
        """(physics steps per episode, physics steps per action), as Brax's wrappers take them."""
        if self.playground:
            from mujoco_playground import dm_control_suite

            config = dm_control_suite.get_default_config(self.task)
            return int(config.episode_length), int(config.action_repeat)
        return 1000, 1


def brax_kwargs(config, episode_length: int = 1000, action_repeat: int = 1) -> dict:
    """Brax's trainer settings for a purejaxppo config of a Brax or Playground task (the same run,
    Brax's names; Brax counts physics steps, ``action_repeat`` of them per action)."""
    from brax.training.agents.ppo import networks as ppo_networks

    assert config.num_envs % config.num_minibatches == 0
    assert config.activation == "silu" and config.action_dist == "tanh" and config.state_dependent_std
    factory = functools.partial(ppo_networks.make_ppo_networks,
                                policy_hidden_layer_sizes=tuple(config.actor_hidden),
                                value_hidden_layer_sizes=tuple(config.critic_hidden), activation=jax.nn.silu)
    return dict(num_timesteps=config.total_timesteps * action_repeat, num_envs=config.num_envs,
                episode_length=episode_length, action_repeat=action_repeat, learning_rate=config.lr,
                entropy_cost=config.ent_coef, discounting=config.gamma,
                unroll_length=config.num_steps, batch_size=config.num_envs // config.num_minibatches,
                num_minibatches=config.num_minibatches, num_updates_per_batch=config.update_epochs,
                normalize_observations=config.normalize_obs, reward_scaling=config.reward_scale,
                clipping_epsilon=config.clip_eps, gae_lambda=config.gae_lambda, vf_loss_coefficient=config.vf_coef,
                normalize_advantage=config.norm_adv,
                max_grad_norm=None, network_factory=factory, seed=config.seed)


def run_ours(config, row: Row | None = None, precision: str | None = None) -> tuple[dict, object]:
    """purejaxppo's run in four calls of one compiled program of a quarter of the updates each (as
    Brax's trainer runs four epochs); ``precision`` replaces the layout's (``core/tuning.py``)."""
    from purejaxppo.core.config import HParams
    from purejaxppo.core.train import make_trainer
    from purejaxppo.core.tuning import tuning_for

    t0 = time.perf_counter()  # main() has checked that the updates make four quarters
    tuning = tuning_for(jax.default_backend())
    trainer = make_trainer(config, tuning=tuning if precision is None else dataclasses.replace(tuning, precision=precision))
    hp = HParams.from_config(config)
    init = jax.jit(trainer.init).lower(jax.random.key(config.seed), hp).compile()
    state = init(jax.random.key(config.seed), hp)
    # the metrics are returned (and waited for) as training keeps them: without them XLA would drop their work
    quarter = jax.jit(lambda s: jax.lax.scan(lambda s, _: trainer.update(s, hp), s, None,
                                             length=config.num_updates // 4)).lower(state).compile()
    t1 = time.perf_counter()
    quarters = []
    for _ in range(4):
        q0 = time.perf_counter()
        state, _metrics = jax.block_until_ready(quarter(state))
        quarters.append(time.perf_counter() - q0)
    t2 = time.perf_counter()
    steps = config.num_updates * config.batch_size
    return {"env_steps": steps, "sps": steps / 2 / (quarters[2] + quarters[3]), "sps_all": steps / sum(quarters),
            "launch_sps": steps / (t2 - t0), "compile_s": t1 - t0, "quarter_s": [round(q, 3) for q in quarters],
            "train_s": t2 - t1}, (trainer, state)


def run_brax(config, row: Row) -> tuple[dict, object]:
    from brax.training.agents.ppo import train as ppo

    episode_length, repeat = row.episode()
    kwargs = brax_kwargs(config, episode_length, repeat)
    environment, wrap = row.brax_env()
    if wrap is not None:
        kwargs["wrap_env_fn"] = wrap
    epochs = []
    t0 = time.perf_counter()
    make_policy, params, _ = ppo.train(environment, num_evals=5, run_evals=False,
                                       progress_fn=lambda s, m: epochs.append(
                                           (s // repeat, float(m["training/sps"]), float(m["training/walltime"]))),
                                       **kwargs)
    jax.block_until_ready(params)
    t1 = time.perf_counter()
    steps = epochs[-1][0]  # actions, as ours counts them
    (s1, _, w1), (s2, _, w2) = epochs[1], epochs[-1]
    return {"env_steps": steps, "sps": (s2 - s1) / (w2 - w1), "launch_sps": steps / (t1 - t0),
            "epoch_s": [round(b[2] - a, 3) for a, b in zip([0.0] + [e[2] for e in epochs], epochs)],
            "train_s": t1 - t0}, (make_policy, params)


def make_judges(row: Row, eval_envs: int, key: int = 1234):
    """The same Brax ``Evaluator`` (deterministic actions) for both trainers' final policies."""
    from brax.training import acting

    from purejaxppo.run.policy import PolicyParams, policy_act

    episode_length, repeat = row.episode()

    def env():
        from brax import envs

        environment, wrap = row.brax_env()
        return (wrap or envs.training.wrap)(environment, episode_length=episode_length, action_repeat=repeat)

    judges = {}

    def ours(payload):  # payload: (trainer, final state); one judge per network (precision)
        trainer, state = payload
        name = ("ours", trainer.network.dot_general, trainer.network.dtype)
        if name not in judges:
            act = policy_act(trainer, deterministic=True)

            def policy_fn(p):
                return lambda obs, key: (act(p, obs, key), {})

            judges[name] = acting.Evaluator(env(), policy_fn, eval_envs, episode_length, repeat,
                                            jax.random.PRNGKey(key))
        p = PolicyParams(state.params, state.obs_rms)
        return float(judges[name].run_evaluation(p, {})["eval/episode_reward"])

    def brax(payload):  # payload: (make_policy, params)
        make_policy, params = payload
        if "brax" not in judges:
            judges["brax"] = acting.Evaluator(env(), functools.partial(make_policy, deterministic=True), eval_envs,
                                              episode_length, repeat, jax.random.PRNGKey(key))
        return float(judges["brax"].run_evaluation(params, {})["eval/episode_reward"])

    return {"purejaxppo": ours, "brax": brax, "purejaxppo-precision": ours, "purejaxppo-recompute": ours,
            "purejaxppo-trajectories": ours, "purejaxppo-trajectories-recompute": ours}


def versions() -> dict:
    from purejaxppo.run.results import installed_versions

    return installed_versions(("jax", "jaxlib", "flax", "optax", "brax", "mujoco", "mujoco-mjx", "gymnax"))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="peer_brax.py", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--row", action="append", required=True,
                   help="TASK-BACKEND:ENVS:UNROLL:STEPS or playground/TASK:ENVS:UNROLL:STEPS (repeatable)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--minibatches", type=int, default=8)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--eval-envs", type=int, default=128)
    p.add_argument("--reset-ratio", type=int, default=1,
                   help="purejaxppo's optimistic resets (reset_ratio; Brax's trainer has its own cached reset)")
    p.add_argument("--precision", help="also run purejaxppo with this precision layout beside the other two "
                   "(core/tuning.py: bfloat16, bfloat16_products), as trainer purejaxppo-precision")
    p.add_argument("--recompute-advantages", action="store_true",
                   help="also run purejaxppo with recompute_advantages (GAE recomputed at every epoch; Brax's loss "
                   "recomputes it at every minibatch step) beside the others, as trainer purejaxppo-recompute")
    p.add_argument("--trajectory-minibatches", action="store_true",
                   help="also run purejaxppo with trajectory_minibatches (minibatches of whole trajectories, as "
                   "Brax's trainer cuts them), as collected and with recompute_advantages (GAE recomputed in every "
                   "minibatch step, as Brax's loss does), as trainers purejaxppo-trajectories and "
                   "purejaxppo-trajectories-recompute")
    p.add_argument("--label", default="", help="a note kept with the rows (e.g. why this subset)")
    p.add_argument("--json", help="write the record here (rewritten after every run; rows of other specs kept)")
    args = p.parse_args(argv)
    from purejaxppo.core.config import validate
    from purejaxppo.core.tuning import Tuning
    from purejaxppo.envs import make_env
    from purejaxppo.errors import ConfigError

    # everything checked before any run: a bad name, or a typo in the last row, is one line now, not after hours
    if args.precision:
        try:
            Tuning(precision=args.precision)
        except ConfigError as e:
            p.error(f"--precision: {e}")
    rows = {}
    for spec in args.row:
        try:
            rows[spec] = Row(spec)
            config = rows[spec].config(args.seeds[0], args.minibatches, args.epochs, args.reset_ratio)
            validate(config)
            make_env(config.env)  # the task and backend exist
        except (ValueError, ConfigError) as e:
            p.error(f"--row {spec!r}: {e}")
        if config.num_updates % 4:
            p.error(f"--row {spec!r}: {config.num_updates} updates; accepted: STEPS that make a multiple of 4 updates "
                    f"of {config.batch_size} env steps (ours is timed over its third and fourth quarters)")
    record = {"device": str(jax.devices()[0]), "machine": platform.processor() or platform.machine(),
              "cpus": os.cpu_count(), "versions": versions(), "stand_ins": STAND_INS,
              "loadavg_start": os.getloadavg(), "command": "python experiments/peer_brax.py " + " ".join(
                  f"--row {r}" for r in args.row) + f" --seeds {' '.join(map(str, args.seeds))} --minibatches "
              f"{args.minibatches} --epochs {args.epochs} --eval-envs {args.eval_envs}"
              + (f" --reset-ratio {args.reset_ratio}" if args.reset_ratio > 1 else "")
              + (f" --precision {args.precision}" if args.precision else "")
              + (" --recompute-advantages" if args.recompute_advantages else "")
              + (" --trajectory-minibatches" if args.trajectory_minibatches else ""), "label": args.label,
              "date": time.strftime("%Y-%m-%d", time.gmtime()), "rows": []}
    keys = [spec + (f" reset_ratio={args.reset_ratio}" if args.reset_ratio > 1 else "")
            + (f" precision={args.precision}" if args.precision else "")
            + (" recompute_advantages" if args.recompute_advantages else "")
            + (" trajectory_minibatches" if args.trajectory_minibatches else "") for spec in args.row]
    trainers = [("purejaxppo", run_ours), ("brax", run_brax)]
    if args.precision:
        trainers.append(("purejaxppo-precision", functools.partial(run_ours, precision=args.precision)))
    if args.recompute_advantages:
        trainers.append(("purejaxppo-recompute",
                         lambda config, row: run_ours(config.replace(recompute_advantages=True), row)))
    if args.trajectory_minibatches:
        trainers.append(("purejaxppo-trajectories",
                         lambda config, row: run_ours(config.replace(trajectory_minibatches=True), row)))
        trainers.append(("purejaxppo-trajectories-recompute", lambda config, row: run_ours(
            config.replace(trajectory_minibatches=True, recompute_advantages=True), row)))
    old_rows = []
    if args.json and os.path.exists(args.json):
        with open(args.json) as f:
            old_rows = [r for r in json.load(f).get("rows", []) if r["row"] not in keys]

    def save():
        if args.json:
            record["loadavg_end"] = os.getloadavg()
            with open(args.json, "w") as f:
                json.dump(dict(record, rows=old_rows + record["rows"]), f, indent=1)

    for spec, key in zip(args.row, keys):
        row = rows[spec]
        judges = make_judges(row, args.eval_envs)
        out = {"row": key, "reset_ratio": args.reset_ratio, "precision": args.precision,
               "recompute_advantages": args.recompute_advantages,
               "trajectory_minibatches": args.trajectory_minibatches, "task": row.task,
               "backend": row.backend,
               "num_envs": row.num_envs,
               "unroll": row.unroll, "minibatches": args.minibatches, "epochs": args.epochs,
               "command": record["command"], "date": record["date"], "label": args.label,
               "loadavg_start": os.getloadavg(), "runs": []}
        record["rows"].append(out)
        for seed in args.seeds:
            config = row.config(seed, args.minibatches, args.epochs, args.reset_ratio)
            for name, run in trainers:
                result, payload = run(config, row)
                result.update(trainer=name, seed=seed, eval_return=judges[name](payload))
                out["runs"].append(result)
                print(json.dumps({"row": key, **result}), flush=True)
                save()
        summary = {}
        for name, _ in trainers:
            runs = [r for r in out["runs"] if r["trainer"] == name]
            summary[name] = {k: float(np.mean([r[k] for r in runs])) for k in ("sps", "launch_sps", "eval_return")}
            summary[name]["eval_returns"] = [round(r["eval_return"], 1) for r in runs]
        summary["sps_ratio"] = summary["purejaxppo"]["sps"] / summary["brax"]["sps"]
        summary["launch_ratio"] = summary["purejaxppo"]["launch_sps"] / summary["brax"]["launch_sps"]
        if args.precision:
            ours = summary["purejaxppo-precision"]
            summary["precision_sps_ratio"] = ours["sps"] / summary["brax"]["sps"]
            summary["precision_launch_ratio"] = ours["launch_sps"] / summary["brax"]["launch_sps"]
            print(f"{key}: purejaxppo in {args.precision} {ours['sps']:,.0f} env steps/s "
                  f"({summary['precision_sps_ratio']:.2f}x Brax; with compilation "
                  f"{summary['precision_launch_ratio']:.2f}x); eval return {ours['eval_returns']}", flush=True)
        if args.recompute_advantages:
            ours = summary["purejaxppo-recompute"]
            summary["recompute_sps_ratio"] = ours["sps"] / summary["brax"]["sps"]
            print(f"{key}: purejaxppo with recompute_advantages {ours['sps']:,.0f} env steps/s "
                  f"({summary['recompute_sps_ratio']:.2f}x Brax); eval return {ours['eval_returns']}", flush=True)
        for name in ("purejaxppo-trajectories", "purejaxppo-trajectories-recompute") if args.trajectory_minibatches else ():
            ours = summary[name]
            summary[name]["sps_ratio"] = ours["sps"] / summary["brax"]["sps"]
            print(f"{key}: {name} {ours['sps']:,.0f} env steps/s ({ours['sps_ratio']:.2f}x Brax); eval return "
                  f"{ours['eval_returns']}", flush=True)
        out["summary"] = summary
        out["loadavg_end"] = os.getloadavg()
        save()
        print(f"{key}: purejaxppo {summary['purejaxppo']['sps']:,.0f} vs Brax {summary['brax']['sps']:,.0f} env "
              f"steps/s ({summary['sps_ratio']:.2f}x; with compilation {summary['launch_ratio']:.2f}x); eval return "
              f"{summary['purejaxppo']['eval_returns']} vs {summary['brax']['eval_returns']}", flush=True)


if __name__ == "__main__":
    main()
