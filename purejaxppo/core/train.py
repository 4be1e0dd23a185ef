"""``make_train(config) -> train(key, hparams)``: a whole PPO run as one pure function.

The run is nested ``lax.scan``s and ``jit`` compiles it into one XLA program::

    train(key, hparams):
        state = init(key, hparams)
        scan over num_updates:                               # update: one PPO iteration
            collect      N envs x T steps with pi_old        #   rollout.py
            make_batch   V(s_t), V(final obs), GAE           #   batch.py
            optimise     epochs x shuffled minibatches:      #   update.py
                         grad of ppo_loss -> clip -> Adam    #   losses.py
            adapt_kl     adaptive KL coefficient             #   update.py
        return state, metrics                                # metrics.py: one row per update

Static settings (shapes, switches) come from ``config`` and are closed over; float
hyperparameters come in through ``hparams`` as traced arrays, so changing them never
recompiles and ``jax.vmap`` can sweep them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from purejaxppo.core import losses
from purejaxppo.core.act import Act
from purejaxppo.core.batch import make_batch
from purejaxppo.core.collectives import LOCAL, Collectives
from purejaxppo.core.config import HParams, PPOConfig, validate
from purejaxppo.core.metrics import METRIC_NAMES, update_metrics
from purejaxppo.core.networks import ActorCritic
from purejaxppo.core.normalize import rms_init
from purejaxppo.core.parts import Parts, make_parts
from purejaxppo.core.rollout import collect
from purejaxppo.core.state import RunnerState
from purejaxppo.core.tuning import Tuning
from purejaxppo.core.update import Optimiser, adapt_kl, learning_rate, make_optimizer, optimise
from purejaxppo.envs import EnvAdapter

Metrics = dict[str, jax.Array]


class Trainer(NamedTuple):
    """The pure pieces of a run; ``train`` composes them."""

    config: PPOConfig
    env: EnvAdapter
    network: ActorCritic
    init: Callable[[jax.Array, HParams], RunnerState]
    update: Callable[[RunnerState, HParams], tuple[RunnerState, Metrics]]
    train: Callable[..., tuple[RunnerState, Metrics]]
    act: Act  # act(params, obs_rms, obs, key, deterministic=False) -> (action, log_prob); with policy gru,
    # act(params, obs_rms, h, obs, start, key, deterministic=False) -> (next h, action, log_prob)
    mesh: Any = None  # the device mesh of a data-parallel trainer (purejaxppo.scale.parallel)
    tuning: Tuning | None = None  # the program layout it was built with (purejaxppo.core.tuning)


def init_state(parts: Parts, key: jax.Array, hparams: HParams) -> RunnerState:
    """The state before the first update: fresh parameters and optimiser, environments reset."""
    config, env, n = parts.config, parts.env, parts.num_local_envs
    key, net_key, env_key = jax.random.split(key, 3)
    obs, env_state = jax.vmap(env.reset)(parts.comm.own(jax.random.split(env_key, config.num_envs)))
    recurrent = config.policy == "gru"
    if recurrent:
        from purejaxppo.core.recurrent import init_params

        params = init_params(parts.network, net_key, env.obs_dim)
    else:
        params = parts.network.init(net_key, jnp.zeros((1, env.obs_dim), jnp.float32))
    return RunnerState(
        params=params,
        opt_state=make_optimizer(hparams).init(params),
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
        hidden=jnp.zeros((n, config.gru_hidden), jnp.float32) if recurrent else None,
        starts=jnp.ones((n,), bool) if recurrent else None,
    )


def update_state(parts: Parts, state: RunnerState, hparams: HParams) -> tuple[RunnerState, Metrics]:
    """One PPO iteration: collect, make the batch, optimise, adapt the KL coefficient; its metrics."""
    key, rollout_key, epoch_key = jax.random.split(state.key, 3)
    stages = (collect, make_batch, adapt_kl)
    if parts.config.policy == "gru":
        from purejaxppo.core import recurrent

        stages = (recurrent.collect, recurrent.make_batch, recurrent.adapt_kl)
    collect_fn, make_batch_fn, adapt_kl_fn = stages
    state, traj, episodes = collect_fn(parts, state, rollout_key)
    state, batch = make_batch_fn(parts, state, traj, hparams)
    lr = learning_rate(parts.config, hparams, state.update_step)
    opt = Optimiser(make_optimizer(hparams), lr, state.kl.coef, hparams)
    params, opt_state, info, epochs = optimise(parts, opt, batch, state.params, state.opt_state, epoch_key)
    kl, post_update_kl = adapt_kl_fn(parts, state.kl, params, batch, hparams)
    state = state.replace(params=params, opt_state=opt_state, key=key, kl=kl, update_step=state.update_step + 1)
    episodic_return, episodic_length = episodes.means()
    return state, update_metrics(
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
    update = functools.partial(update_state, parts)

    def train(key: jax.Array, hparams: HParams | None = None) -> tuple[RunnerState, Metrics]:
        """Train from ``key``; returns ``(final RunnerState, metrics {name: [num_updates]})``."""
        hparams = default_hparams if hparams is None else hparams
        state = init(key, hparams)
        return jax.lax.scan(lambda s, _: update(s, hparams), state, None, length=config.num_updates)

    if config.policy == "gru":
        from purejaxppo.core.recurrent import make_recurrent_act

        act = make_recurrent_act(config, parts.network, parts.dist, parts.comm)
    else:
        act = parts.act
    return Trainer(config, parts.env, parts.network, init, update, train, act, tuning=parts.tuning)


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


__all__ = ["METRIC_NAMES", "RunnerState", "Trainer", "make_train", "make_trainer"]
