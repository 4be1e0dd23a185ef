"""``make_train(config) -> train(key, hparams)``: a whole PPO run as one pure function.

The run is nested ``lax.scan``s and ``jit`` compiles it into one XLA program::

    train(key, hparams):
        state = init(key, hparams)
        scan over num_updates:                               # update: one PPO iteration
            collect      N envs x T steps with pi_old        #   feedforward.py / recurrent.py
            make_batch   V(s_t), V(final obs), GAE           #   (the policy kind's), stages.py
            optimise     epochs x shuffled minibatches:      #   stages.py
                         grad of ppo_loss -> clip -> Adam    #   losses.py
            adapt_kl     adaptive KL coefficient             #   stages.py
        return state, metrics                                # metrics.py: one row per update

Static settings (shapes, switches) come from ``config`` and are closed over; float
hyperparameters come in through ``hparams`` as traced arrays, so changing them never
recompiles and ``jax.vmap`` can sweep them.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from purejaxppo.core import feedforward, losses, recurrent, stages, trpo
from purejaxppo.core.act import Act, action_mapping
from purejaxppo.core.collectives import LOCAL, Collectives
from purejaxppo.core.config import HParams, PPOConfig, check_hparams, validate, validate_for_env
from purejaxppo.core.distributions import distribution
from purejaxppo.core.kind import PolicyKind
from purejaxppo.core.layout import make_layout
from purejaxppo.core.metrics import METRIC_NAMES, SCHEMAS, update_metrics
from purejaxppo.core.normalize import rms_init
from purejaxppo.core.parts import Parts
from purejaxppo.core.state import RunnerState
from purejaxppo.core.tuning import Tuning, tuning_for
from purejaxppo.envs import EnvAdapter, make_env
from purejaxppo.envs.vector import make_vector_step

POLICY_KINDS: dict[str, PolicyKind] = {kind.name: kind for kind in (feedforward.KIND, recurrent.KIND)}

Metrics = dict[str, jax.Array]


class Trainer(NamedTuple):
    """The pure pieces of a run; ``train`` composes them."""

    config: PPOConfig
    env: EnvAdapter
    network: Any
    init: Callable[[jax.Array, HParams], RunnerState]
    update: Callable[[RunnerState, HParams], tuple[RunnerState, Metrics]]
    train: Callable[..., tuple[RunnerState, Metrics]]
    act: Act  # act(params, obs_rms, obs, key, deterministic=False) -> (action, log_prob); with policy gru,
    # act(params, obs_rms, h, obs, start, key, deterministic=False) -> (next h, action, log_prob)
    mesh: Any = None  # the device mesh of a data-parallel trainer (purejaxppo.scale.parallel)
    tuning: Tuning | None = None  # the program layout it was built with (purejaxppo.core.tuning)
    policy: PolicyKind | None = None  # the policy kind's stages (init_memory and stepper serve evaluation)


def make_parts(config: PPOConfig, comm: Collectives = LOCAL, tuning: Tuning | None = None) -> Parts:
    """Build the environment (checking the settings that depend on it), the policy kind's network and
    acting function, the loss, and the resolved layout.

    ``tuning`` defaults to the choices for JAX's default backend (:mod:`purejaxppo.core.tuning`).
    """
    env, _ = make_env(config.env)
    validate_for_env(config, env)
    tuning = tuning_for() if tuning is None else tuning
    if config.recompute_advantages and config.bootstrap_truncation and tuning.truncation == "branch":
        # each epoch values the final observations anew, so the rollout keeps them
        tuning = dataclasses.replace(tuning, truncation="compact")
    layout = make_layout(tuning, config.bootstrap_truncation)
    kind = POLICY_KINDS[config.policy]
    network = kind.make_network(config, env, layout)
    dist = distribution(env.action_kind, squash=config.action_dist == "tanh", nvec=env.action_nvec)
    vstep = make_vector_step(env, action_mapping(config), config.reset_ratio, tuning.resets)

    def loss(apply_fn):
        return functools.partial(losses.ppo_loss, apply_fn, dist, kl_penalty=config.kl_penalty != "off",
                                 clip_vloss=config.clip_vloss)

    act = kind.make_act(config, network, dist, comm)
    optimizer = functools.partial(stages.make_optimizer, clip_per_network=config.clip_per_network)
    return Parts(config, env, kind, network, dist, comm, act, vstep, env.action_masks, loss, layout, tuning, optimizer)


class Stages(NamedTuple):
    """One iteration's stages, chosen once where the trainer is made: each takes the state or
    the batch and names no variant. ``optimise`` is the policy step (PPO's epochs of clipped-loss
    minibatches, or TRPO's trust-region step and critic fit); ``adapt_kl`` the KL coefficient's
    rule (adaptive, or kept); ``schema`` the metric names the update returns."""

    collect: Callable  # (state, key) -> (state, rollout, EpisodeStats)
    make_batch: Callable  # (state, rollout, hparams) -> (state, batch)
    optimise: Callable  # (opt, batch, params, opt_state, key) -> (params, opt_state, LossInfo, epochs run)
    adapt_kl: Callable  # (kl state, params, batch, hparams) -> (kl state, measured KL or NaN)
    schema: tuple[str, ...] = METRIC_NAMES


# The policy step of each algorithm (config.algo), and its metric schema.
POLICY_STEPS: dict[str, Callable] = {"ppo": stages.optimise, "trpo": trpo.optimise}


def make_stages(parts: Parts) -> Stages:
    """The stages for ``parts``: the policy kind's rollout and batch, the algorithm's policy step
    (PPO's epochs or TRPO's step), the KL rule."""
    adapt = stages.adapt_kl if parts.config.kl_penalty == "adaptive" else stages.keep_kl
    algo = parts.config.algo
    policy_step = POLICY_STEPS[algo]
    kind, config = parts.policy, parts.config
    if config.trajectory_minibatches:  # PPO with a feed-forward policy (validated); recomputed per minibatch
        run_epoch = kind.run_trajectory_epoch
        if config.recompute_advantages:
            run_epoch = functools.partial(run_epoch, rows=kind.recomputed_trajectory_rows)
        policy_step = functools.partial(policy_step, run_epoch=run_epoch)
    elif config.recompute_advantages:  # PPO with a feed-forward policy (validated): recomputed per epoch
        policy_step = functools.partial(policy_step, epoch_batch=functools.partial(kind.recompute_advantages, parts))
    return Stages(*(functools.partial(f, parts) for f in
                    (parts.policy.collect, parts.policy.make_batch, policy_step, adapt)), SCHEMAS[algo])


def init_state(parts: Parts, key: jax.Array, hparams: HParams) -> RunnerState:
    """The state before the first update: fresh parameters and optimiser, environments reset."""
    config, env, n = parts.config, parts.env, parts.num_local_envs
    key, net_key, env_key = jax.random.split(key, 3)
    obs, env_state = jax.vmap(env.reset)(parts.comm.own(jax.random.split(env_key, config.num_envs)))
    params = parts.policy.init_params(parts.network, net_key, env.obs_dim)
    memory = parts.policy.init_memory(config, (n,))
    return RunnerState(
        params=params,
        opt_state=parts.optimizer(hparams).init(params),
        env_state=env_state,
        obs=obs,
        key=key,
        obs_rms=rms_init((env.obs_dim,)),
        ret_rms=rms_init(()),
        disc_return=jnp.zeros((n,), jnp.float32),
        episode_return=jnp.zeros((n,), jnp.float32),
        episode_length=jnp.zeros((n,), jnp.int32),
        kl=losses.kl_controller_init(hparams.kl_coef),
        update_step=jnp.zeros((), jnp.int32),
        hidden=memory,
        starts=None if memory is None else jnp.ones((n,), bool),
    )


def update_state(parts: Parts, run: Stages, state: RunnerState, hparams: HParams) -> tuple[RunnerState, Metrics]:
    """One PPO iteration (Algorithm 1 of the PPO paper): collect, make the batch, optimise, adapt the
    KL coefficient; its metrics."""
    key, rollout_key, epoch_key = jax.random.split(state.key, 3)
    state, rollout, episodes = run.collect(state, rollout_key)  # N actors x T steps with pi_old
    state, batch = run.make_batch(state, rollout, hparams)  # advantages A_1..A_T (GAE), targets
    lr = stages.learning_rate(parts.config, hparams, state.update_step)
    opt = stages.Optimiser(parts.optimizer(hparams), lr, state.kl.coef, hparams)
    params, opt_state, info, epochs = run.optimise(opt, batch, state.params, state.opt_state, epoch_key)
    kl, post_update_kl = run.adapt_kl(state.kl, params, batch, hparams)
    state = state.replace(params=params, opt_state=opt_state, key=key, kl=kl, update_step=state.update_step + 1)
    episodic_return, episodic_length = episodes.means()
    return state, update_metrics(
        run.schema,
        episodic_return=episodic_return,
        episodic_length=episodic_length,
        episodes=episodes.count,
        learning_rate=jnp.asarray(lr, jnp.float32),
        **info._asdict(),
        kl_coef=opt.kl_coef,
        # The barrier keeps XLA from fusing this reduction with the batch's producers, which
        # it would do differently for different vmap widths (a sweep's per-device block).
        explained_variance=losses.explained_variance(*jax.lax.optimization_barrier((batch.value, batch.target))),
        epochs=epochs,
        post_update_kl=post_update_kl,
    )


def make_trainer(config: PPOConfig, comm: Collectives = LOCAL, tuning: Tuning | None = None) -> Trainer:
    """Validate ``config``, build its environment and network, and the pure ``init``, ``update``
    and ``train`` functions.

    ``comm`` supplies the cross-device operations; the default is the one-device program,
    without collectives. :mod:`purejaxppo.scale.parallel` passes the implementation over a mesh
    axis, under which these functions are the per-device body of a data-parallel run.
    ``tuning`` lays the program out for a backend (:mod:`purejaxppo.core.tuning`); the default
    is the measured best for JAX's default backend.
    """
    validate(config)
    parts = make_parts(config, comm, tuning)
    default_hparams = HParams.from_config(config)
    init = functools.partial(init_state, parts)
    update = functools.partial(update_state, parts, make_stages(parts))

    def train(key: jax.Array, hparams: HParams | None = None) -> tuple[RunnerState, Metrics]:
        """Train from ``key``; returns ``(final RunnerState, metrics {name: [num_updates]})``."""
        if hparams is None:
            hparams = default_hparams
        else:
            check_hparams(hparams)  # in Python, values given from outside; traced ones are passed over
        state = init(key, hparams)
        return jax.lax.scan(lambda s, _: update(s, hparams), state, None, length=config.num_updates)

    return Trainer(config, parts.env, parts.network, init, update, train, parts.act, tuning=parts.tuning,
                   policy=parts.policy)


def make_train(config: PPOConfig, tuning: Tuning | None = None) -> Callable[..., tuple[RunnerState, Metrics]]:
    """``train(key, hparams=None) -> (final_state, metrics)`` for ``config``; pure and jittable.

    Example:
        >>> import jax
        >>> from purejaxppo import PPOConfig, make_train
        >>> config = PPOConfig(env="CartPole-v1", total_timesteps=4096)
        >>> state, metrics = jax.jit(make_train(config))(jax.random.key(0))
        >>> metrics["charts/episodic_return"].shape
        (8,)
    """
    return make_trainer(config, tuning=tuning).train


__all__ = ["METRIC_NAMES", "RunnerState", "Stages", "Trainer", "make_train", "make_trainer"]
