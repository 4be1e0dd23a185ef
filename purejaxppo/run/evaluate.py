"""Evaluating a trained policy: whole episodes in one compiled program, and recorded episodes."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from purejaxppo.core.act import action_mapping
from purejaxppo.core.config import check_integer
from purejaxppo.core.distributions import distribution, mask_logits
from purejaxppo.core.train import Trainer
from purejaxppo.errors import ConfigError, RunError

if TYPE_CHECKING:
    from purejaxppo.run.programs import Programs


def _episode_limit(trainer: Trainer, max_steps: int | None) -> int:
    return max_steps or int(getattr(trainer.env.params, "max_steps_in_episode", 1000))


def _count(name: str, value: Any, none_ok: bool = False) -> None:
    """A positive integer (or None where that means the default), else a one-line ConfigError."""
    check_integer(name, value, 1, "a positive integer" + (" or None" if none_ok else ""), none_ok)


def make_evaluate(trainer: Trainer, num_episodes: int, deterministic: bool = True, max_steps: int | None = None):
    """``evaluate(state, key) -> returns [num_episodes]``, pure and jittable.

    ``state`` is anything with ``params`` and ``obs_rms`` (a ``RunnerState`` or a loaded
    policy's ``PolicyParams``). Runs ``num_episodes`` environments in parallel until each has
    finished one episode (or ``max_steps`` steps, by default the environment's time limit);
    the loop ends as soon as the last episode does, and step ``t`` draws its randomness from a
    key folded with ``t``. Actions come from the trainer's ``act``, as in training (clipped to
    the action bounds on the way into the environment when ``clip_actions`` is on, or squashed
    into them with ``action_dist`` tanh);
    ``deterministic`` takes the mode of the policy instead of sampling.
    """
    if not isinstance(trainer, Trainer):
        raise ConfigError(f"make_evaluate: got a {type(trainer).__name__}; accepted: a Trainer (make_trainer(config))")
    _count("num_episodes", num_episodes)
    _count("max_steps", max_steps, none_ok=True)
    from purejaxppo.run.compiled import check_fits, env_bytes

    # every episode runs at once, in its own environment: sized before anything is traced (a lower
    # bound: the state before and after a step, and the policy's hidden activations)
    each = 2 * env_bytes(trainer) + 4 * sum(trainer.config.actor_hidden) + 16
    check_fits(f"{num_episodes} episodes run at once", num_episodes * each, "fewer episodes (--episodes)")
    step, how = trainer.policy.stepper(trainer.act), action_mapping(trainer.config)
    limit = _episode_limit(trainer, max_steps)

    def evaluate(state: Any, key: jax.Array) -> jax.Array:
        def policy(memory, obs, act_key, mask):
            memory, action, _ = step(state.params, state.obs_rms, memory, obs, act_key, deterministic, mask)
            return memory, action

        # a recurrent policy starts every episode from a zero hidden state; each environment plays one
        # episode (later ones are not counted), so the state is never reset after the first step
        memory = trainer.policy.init_memory(trainer.config, (num_episodes,))
        return episode_returns(trainer.env, policy, memory, key, num_episodes, limit, how)

    return evaluate


def episode_returns(env: Any, policy: Callable, policy_carry: Any, key: jax.Array, num_episodes: int, limit: int,
                    how: str = "clip") -> jax.Array:
    """The returns ``[num_episodes]`` of one episode in each of ``num_episodes`` environments run in
    parallel, pure and jittable: the loop ends as soon as the last episode does (or after ``limit``
    steps), and step ``t`` draws its randomness from ``key`` folded with ``t``.
    ``policy(carry, obs [num_episodes, ...], key, mask) -> (carry, action [num_episodes, ...])`` acts
    (``mask``: the environments' action masks, or None where they have none),
    starting from ``policy_carry`` (a recurrent state, or None); ``how`` maps its continuous actions
    into the environment's bounds (``EnvAdapter.step``)."""
    vstep = jax.vmap(lambda k, s, a: env.step(k, s, a, how))
    reset_key, run_key = jax.random.split(key)
    obs, env_state = jax.vmap(env.reset)(jax.random.split(reset_key, num_episodes))

    def step(carry):
        t, obs, env_state, ret, alive, h = carry
        act_key, env_key = jax.random.split(jax.random.fold_in(run_key, t))
        h, action = policy(h, obs, act_key, env.action_masks(env_state))
        obs, env_state, reward, terminated, truncated, _ = vstep(
            jax.random.split(env_key, num_episodes), env_state, action
        )
        ret = ret + reward * alive
        alive = alive * (1.0 - (terminated | truncated).astype(jnp.float32))
        return t + 1, obs, env_state, ret, alive, h

    def running(carry):  # stop as soon as every episode has ended, not at the time limit
        t, *_, alive, _ = carry
        return (t < limit) & jnp.any(alive > 0)

    init = (jnp.zeros((), jnp.int32), obs, env_state, jnp.zeros(num_episodes), jnp.ones(num_episodes), policy_carry)
    _, _, _, returns, _, _ = jax.lax.while_loop(running, step, init)
    return returns


def random_policy_return(trainer: Trainer, episodes: int, key: jax.Array) -> float:
    """Mean return of a uniformly random policy over ``episodes`` episodes (:func:`episode_returns`, jitted)."""
    env = trainer.env

    def policy(carry, obs, act_key, mask):
        if env.action_kind == "discrete" and mask is None:
            return carry, jax.random.randint(act_key, (episodes,), 0, env.num_actions)
        if env.action_kind != "continuous":  # uniform over each factor's allowed choices
            logits = jnp.zeros((episodes, env.num_actions))
            return carry, distribution(env.action_kind, nvec=env.action_nvec).sample(act_key, mask_logits(logits, mask))
        return carry, jax.random.uniform(act_key, (episodes, env.action_dim), minval=env.action_low,
                                         maxval=env.action_high)

    limit = int(getattr(env.params, "max_steps_in_episode", 1000))
    returns = jax.jit(lambda k: episode_returns(env, policy, None, k, episodes, limit))(key)
    return float(np.mean(np.asarray(returns)))


def record_episode(trainer: Trainer, state: Any, deterministic: bool, seed: int = 0, max_steps: int | None = None,
                   programs: Programs | None = None):
    """One episode as ``(observations [T+1, obs_dim], rewards [T])``, compiled as one scan.

    The observations run from the first one to the one the last step reached, so an
    episode of T steps gives T + 1 frames. For a Brax environment the frames are the bodies'
    world positions ``[T+1, bodies, 3]`` instead (its observations do not carry them all).
    ``programs`` (a :class:`purejaxppo.run.programs.Programs` of the trainer) compiles it
    through the saved programs.
    """
    env, act, how = trainer.env, trainer.policy.stepper(trainer.act), action_mapping(trainer.config)
    limit = _episode_limit(trainer, max_steps)
    positions = getattr(env.env, "body_positions", None)  # Brax: draw the bodies, not the observation

    def run(state, key):
        reset_key, key = jax.random.split(key)
        obs, env_state = env.reset(reset_key)
        h0 = trainer.policy.init_memory(trainer.config, ())

        def step(carry, key_t):
            obs, env_state, alive, h = carry
            act_key, env_key = jax.random.split(key_t)
            mask = env.action_mask(env_state) if env.has_action_mask else None
            h, action, _ = act(state.params, state.obs_rms, h, obs, act_key, deterministic, mask)
            next_obs, next_state, reward, terminated, truncated, final_obs, info = env.step_with_info(
                env_key, env_state, action, how)
            done = terminated | truncated
            if positions is not None:  # the bodies where the step left them, before any reset
                final_obs = info["body_positions"]
            return (next_obs, next_state, alive & ~done, h), (final_obs, reward * alive, alive)

        _, (final_obs, rewards, alive) = jax.lax.scan(
            step, (obs, env_state, jnp.ones((), bool), h0), jax.random.split(key, limit)
        )
        return (obs if positions is None else positions(env_state)), final_obs, rewards, alive

    args = (state, jax.random.key(seed))
    if programs is not None and max_steps is None:
        compiled = programs.compile(f"record{'deterministic' if deterministic else 'stochastic'}", run, args)
    else:
        compiled = jax.jit(run)
    first, reached, rewards, alive = jax.device_get(compiled(*args))
    length = int(alive.sum())
    frames = np.concatenate([first[None], reached[:length]], axis=0)
    return frames, np.asarray(rewards[:length], np.float64)


def evaluate_run(run_dir: str, episodes: int, deterministic: bool, seed: int = 0, step: int | None = None,
                 render: str | None = None, log=print, program_cache: str | None = None,
                 agent: int | None = None) -> dict[str, Any]:
    """Evaluate a run's checkpoint (and record one episode as a GIF); writes and returns ``eval.json``'s record.

    ``agent``: evaluate that agent of the sweep in ``run_dir`` instead (its record goes to
    ``evals/agentI.json`` in the sweep's folder).

    ``program_cache``: a folder of saved programs (:mod:`purejaxppo.run.programs`, the command
    line's is ``programs`` in the compilation cache). The evaluation's program (and the
    recording's) is saved there and loaded by a later evaluation of the same settings, and
    the initial state's shapes are read from the program training saved; nothing is traced
    twice."""
    from purejaxppo.run import layout

    _count("episodes", episodes)
    if agent is None:
        layout.read_config(run_dir)  # a run folder
    # A reader takes no lock: a run still training, or one on a read-only disk, can be evaluated.
    return _evaluate_run(run_dir, episodes, deterministic, seed, step, render, log, program_cache, agent)


def _evaluate_run(run_dir, episodes, deterministic, seed, step, render, log, program_cache,
                  agent=None) -> dict[str, Any]:
    from purejaxppo.run import layout
    from purejaxppo.run.compiled import make_programs
    from purejaxppo.run.policy import load_policy

    policy = load_policy(run_dir, step, deterministic=deterministic, program_cache=program_cache, agent=agent)
    env = policy.trainer.env
    if render:
        from purejaxppo.run.render import check_renderable

        check_renderable(env.name, env.obs_shape, render)
    mode = "deterministic" if deterministic else "stochastic"
    which = f"agent {agent} of {run_dir}" if agent is not None else run_dir
    log(f"evaluating {which} at update {policy.step} on {env.name}: {episodes} {mode} episodes")
    programs = make_programs(policy.trainer, program_cache)
    args = (policy.params, jax.random.key(seed))
    evaluate = programs.compile(f"evaluate{episodes}{mode}", make_evaluate(policy.trainer, episodes, deterministic),
                                args)
    returns = np.asarray(evaluate(*args))
    record: dict[str, Any] = {
        "run": os.path.abspath(run_dir), **({"agent": int(agent)} if agent is not None else {}), "env": env.name,
        "update": policy.step,
        "env_steps": policy.step * policy.config.batch_size, "episodes": episodes, "deterministic": deterministic,
        "seed": seed, "mean": float(returns.mean()), "std": float(returns.std()), "min": float(returns.min()),
        "max": float(returns.max()), "returns": returns.tolist(),
    }
    log(f"return: mean {record['mean']:.2f}, std {record['std']:.2f}, min {record['min']:.2f}, "
        f"max {record['max']:.2f}")
    if render:
        from purejaxppo.run.render import write_gif

        frames, rewards = record_episode(policy.trainer, policy.params, deterministic, seed, programs=programs)
        ret = float(rewards.sum())
        n = write_gif(render, env.name, env.obs_shape, frames, rewards, parents=getattr(env.env, "body_parents", None))
        record["render"] = {"path": os.path.abspath(render), "frames": n, "return": ret}
        log(f"recorded one episode ({n - 1} steps, return {ret:.2f}) in {render}")
    path = os.path.join(run_dir, layout.EVAL)
    if agent is not None:
        path = os.path.join(run_dir, layout.SWEEP_EVALS, f"agent{agent}.json")
    try:
        if agent is not None:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        layout.write_json(path, record)
    except (RunError, OSError) as e:  # a read-only disk: the evaluation is done, only its record stays unwritten
        log(f"note: {e}; the results are the lines above")
        return record
    log(f"wrote {path}")
    return record
