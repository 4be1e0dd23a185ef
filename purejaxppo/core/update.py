"""Optimising the PPO loss on a batch: epochs of shuffled minibatches, early stop, KL coefficient."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from purejaxppo.core import losses
from purejaxppo.core.batch import Batch
from purejaxppo.core.config import HParams, PPOConfig
from purejaxppo.core.networks import ActorCritic
from purejaxppo.core.parts import Parts
from purejaxppo.core.shuffle import feistel_permutation, permutation


def make_optimizer(hparams: HParams) -> optax.GradientTransformation:
    """Global-norm gradient clipping, then Adam's scaling.

    The learning rate is applied outside optax so that it can be traced and annealed
    without living in the optimiser state.
    """
    return optax.chain(
        optax.clip_by_global_norm(hparams.max_grad_norm),
        optax.scale_by_adam(eps=hparams.adam_eps),
    )


def learning_rate(config: PPOConfig, hparams: HParams, update_step: jax.Array) -> jax.Array:
    """``lr``, annealed linearly to zero over the run when ``anneal_lr`` is on."""
    if config.anneal_lr:
        return hparams.lr * (1.0 - update_step.astype(jnp.float32) / config.num_updates)
    return hparams.lr


class Optimiser(NamedTuple):
    """What the minibatch steps of one update share."""

    tx: optax.GradientTransformation
    lr: jax.Array  # []
    kl_coef: jax.Array  # [] beta of the KL penalty
    hparams: HParams


class MinibatchCarry(NamedTuple):
    """What the minibatch scan carries."""

    params: Any
    opt_state: Any


class EpochCarry(NamedTuple):
    """What the epoch scan carries."""

    params: Any
    opt_state: Any
    stopped: jax.Array  # [] bool: an earlier epoch passed target_kl


def minibatch_step(parts: Parts, opt: Optimiser, carry: MinibatchCarry, mb: Batch):
    """One gradient step on a minibatch; with data parallelism each device takes its share of it."""
    params, opt_state = carry.params, carry.opt_state
    config, comm = parts.config, parts.comm
    if config.norm_adv:  # statistics of the whole minibatch (every device holds all of it)
        mb = mb._replace(advantage=losses.normalize_advantages(mb.advantage))
    if config.policy == "gru":  # minibatches of sequences, re-run from their first hidden state
        from purejaxppo.core import recurrent

        apply_fn, mine = recurrent.sequence_apply(parts.network), recurrent.own(comm, mb)
    else:
        apply_fn, mine = parts.network.apply, jax.tree_util.tree_map(comm.own, mb)
    loss = functools.partial(losses.ppo_loss, apply_fn, parts.dist,
                             kl_penalty=config.kl_penalty != "off", clip_vloss=config.clip_vloss)
    grads, info = jax.grad(loss, has_aux=True)(params, mine, opt.hparams, opt.kl_coef)
    grads, info = comm.mean(grads), comm.mean(info)
    updates, opt_state = opt.tx.update(grads, opt_state, params)
    params = jax.tree_util.tree_map(lambda p, u: p - opt.lr * u, params, updates)
    return MinibatchCarry(params, opt_state), info


def epoch_order(parts: Parts, key: jax.Array) -> jax.Array:
    """The order of the batch's rows for one epoch (``tuning.shuffle``): ``[batch_size]`` int32."""
    n = parts.config.batch_size
    if parts.tuning.shuffle == "packed":
        return permutation(key, n)
    if parts.tuning.shuffle == "feistel":
        return feistel_permutation(key, n)
    return jax.random.permutation(key, n)


def run_epoch(parts: Parts, opt: Optimiser, batch: Batch, params: Any, opt_state: Any, key: jax.Array):
    """Shuffle the batch, cut it into minibatches, take a step on each; mean of their LossInfo.

    ``tuning.gather``: the shuffled batch is made whole before the steps (``"epoch"``), or each
    step gathers its own rows (``"minibatch"``); the minibatches are the same.
    """
    config, tuning = parts.config, parts.tuning
    order = epoch_order(parts, key).reshape(config.num_minibatches, config.minibatch_size)
    step = functools.partial(minibatch_step, parts, opt)
    if tuning.gather == "epoch":
        xs, body = jax.tree_util.tree_map(lambda x: x[order], batch), step
    else:
        xs = order

        def body(carry, rows):
            return step(carry, jax.tree_util.tree_map(lambda x: x[rows], batch))

    end, info = jax.lax.scan(body, MinibatchCarry(params, opt_state), xs, unroll=tuning.minibatch_unroll)
    return end.params, end.opt_state, jax.tree_util.tree_map(lambda x: x.mean(axis=0), info)


def optimise(parts: Parts, opt: Optimiser, batch: Batch, params: Any, opt_state: Any, key: jax.Array):
    """``update_epochs`` epochs, stopping early once an epoch's mean KL passes ``target_kl`` (if > 0).

    Returns ``(params, opt_state, LossInfo averaged over the epochs run, epochs run)``.
    """
    target_kl = opt.hparams.target_kl

    def skip(params, opt_state, key):
        return params, opt_state, losses.LossInfo(*[jnp.zeros((), jnp.float32)] * len(losses.LossInfo._fields))

    if parts.config.policy == "gru":
        from purejaxppo.core import recurrent

        run = functools.partial(recurrent.run_epoch, parts, opt, batch)
    else:
        run = functools.partial(run_epoch, parts, opt, batch)

    def epoch(carry: EpochCarry, key: jax.Array):
        if parts.tuning.early_stop == "branch":  # an epoch after the stop does no work
            params, opt_state, info = jax.lax.cond(carry.stopped, skip, run, carry.params, carry.opt_state, key)
        else:  # it runs, and its results are dropped: no conditional in the program
            ran = run(carry.params, carry.opt_state, key)
            params, opt_state, info = jax.tree_util.tree_map(
                lambda kept, new: jnp.where(carry.stopped, kept, new), skip(carry.params, carry.opt_state, key), ran
            )
        stopped = carry.stopped | ((target_kl > 0) & (info.approx_kl > target_kl))
        return EpochCarry(params, opt_state, stopped), (info, ~carry.stopped)

    keys = jax.random.split(key, parts.config.update_epochs)
    end, (infos, ran) = jax.lax.scan(epoch, EpochCarry(params, opt_state, jnp.zeros((), bool)), keys)
    n_ran = jnp.sum(ran)
    # one reduction over the stacked terms [epochs, 5]
    info = losses.LossInfo(*(jnp.sum(jnp.stack(infos, axis=-1) * ran[:, None], axis=0) / jnp.maximum(n_ran, 1)))
    return end.params, end.opt_state, info, n_ran


def adapt_kl(parts: Parts, kl: losses.KLControllerState, params: Any, batch: Batch, hparams: HParams):
    """The adaptive penalty's coefficient step, from d = KL[pi_old, pi_new] over the whole batch.

    Returns ``(new controller state, d)``; d is NaN and the state unchanged for other penalties.
    """
    if parts.config.kl_penalty != "adaptive":
        return kl, jnp.asarray(jnp.nan, jnp.float32)
    own = parts.comm.own
    pi = parts.network.apply(params, own(batch.obs), method=ActorCritic.policy)
    measured = parts.comm.mean(losses.kl_estimate(parts.dist.log_prob(pi, own(batch.action)) - own(batch.log_prob)))
    return losses.adaptive_kl_update(kl, measured, hparams.kl_target), measured
