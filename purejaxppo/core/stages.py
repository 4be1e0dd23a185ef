"""The pieces every policy kind's stages share: episode tracking, reward scaling, advantages and
targets, the optimiser, and the loop of epochs over shuffled minibatches.

Each policy kind (:mod:`purejaxppo.core.feedforward`, :mod:`purejaxppo.core.recurrent`) builds
its collect / make-batch / epoch stages from these; :mod:`purejaxppo.core.train` composes them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from purejaxppo.core import losses
from purejaxppo.core.config import HParams, PPOConfig
from purejaxppo.core.gae import gae_advantages
from purejaxppo.core.normalize import rms_update
from purejaxppo.core.state import RunnerState

if TYPE_CHECKING:
    from purejaxppo.core.parts import Parts


# --- episodes --------------------------------------------------------------------------------

class EpisodeStats(NamedTuple):
    """Sums over the episodes that ended during a rollout."""

    return_sum: jax.Array  # [] float32 (or [N] while the rollout runs, per environment)
    length_sum: jax.Array  # [] int32
    count: jax.Array  # [] int32

    @classmethod
    def zeros(cls, shape: tuple[int, ...] = ()) -> EpisodeStats:
        return cls(jnp.zeros(shape, jnp.float32), jnp.zeros(shape, jnp.int32), jnp.zeros(shape, jnp.int32))

    def means(self) -> tuple[jax.Array, jax.Array]:
        """Mean return and mean length of the episodes (NaN when none ended)."""
        n = jnp.maximum(self.count, 1).astype(jnp.float32)
        ended = self.count > 0
        return (jnp.where(ended, self.return_sum / n, jnp.nan),
                jnp.where(ended, self.length_sum.astype(jnp.float32) / n, jnp.nan))


class StepCarry(NamedTuple):
    """What the rollout scan carries from one step to the next."""

    env_state: Any  # [N, ...]
    obs: jax.Array  # [N, obs_dim]
    episode_return: jax.Array  # [N]
    episode_length: jax.Array  # [N]
    stats: EpisodeStats  # [] sums, or [N] per environment (the layout's episode_sums)


def track_episodes(carry: StepCarry, reward: jax.Array, done: jax.Array) -> tuple[jax.Array, jax.Array, EpisodeStats]:
    """Add a step to the running episodes; count the ones that ended and restart them at zero.

    The sums have the shape of ``carry.stats``: scalars (summed over environments every
    step) or ``[N]`` (per environment, summed once after the rollout).
    """
    ep_ret = carry.episode_return + reward
    ep_len = carry.episode_length + 1
    s = carry.stats
    per_env = s.count.ndim == 1
    total = (lambda x: x) if per_env else jnp.sum
    stats = EpisodeStats(
        s.return_sum + total(jnp.where(done, ep_ret, 0.0)),
        s.length_sum + total(jnp.where(done, ep_len, 0)),
        s.count + total(done.astype(jnp.int32)),
    )
    return jnp.where(done, 0.0, ep_ret), jnp.where(done, 0, ep_len), stats


def rollout_start(state: RunnerState, stats: EpisodeStats) -> StepCarry:
    """The rollout's first carry: the state's environments and running episodes."""
    return StepCarry(state.env_state, state.obs, state.episode_return, state.episode_length, stats)


def rollout_end(state: RunnerState, end: StepCarry, **more: Any) -> RunnerState:
    """The state after a rollout that ended in ``end`` (and the ``more`` fields a policy kind carries)."""
    return state.replace(env_state=end.env_state, obs=end.obs, episode_return=end.episode_return,
                         episode_length=end.episode_length, **more)


# --- from rewards to advantages ----------------------------------------------------------------

def scale_rewards(parts: Parts, state: RunnerState, traj: Any, hparams: HParams):
    """Rewards times ``reward_scale``, then divided by the running std of the discounted return
    (when ``normalize_reward``) and clipped.

    ``reward_scale`` is a static setting, and a scale of 1 leaves the program without the
    multiplication: programs built for the same run (fused, chunked, resumed) then fuse alike,
    which keeps them bit-identical."""
    config, gamma = parts.config, hparams.gamma
    reward = traj.reward * config.reward_scale if config.reward_scale != 1.0 else traj.reward
    if not config.normalize_reward:
        return state, reward
    done = traj.terminated | traj.truncated

    def step(g, inputs):
        r_t, done_t = inputs
        g = g * gamma + r_t
        return jnp.where(done_t, 0.0, g), g

    disc_return, returns_t = jax.lax.scan(step, state.disc_return, (reward, done))
    ret_rms = rms_update(state.ret_rms, parts.comm.gather(returns_t, axis=1))
    rewards = jnp.clip(reward / jnp.sqrt(ret_rms.var + 1e-8), -config.clip_reward, config.clip_reward)
    return state.replace(disc_return=disc_return, ret_rms=ret_rms), rewards


def advantages_and_targets(parts: Parts, traj, rewards: jax.Array, values: jax.Array, last_value: jax.Array,
                           final_value: Callable[[], jax.Array], hparams: HParams) -> tuple[jax.Array, jax.Array]:
    """GAE of a trajectory ``[T, N]`` from V(s_t), V(s_T) and, when truncations are bootstrapped,
    ``final_value()``: V(final observation) ``[T, N]`` (asked for only then)."""
    config = parts.config
    next_values = jnp.concatenate([values[1:], last_value[None]], axis=0)  # V(s_{t+1})
    done = traj.terminated | traj.truncated
    if config.bootstrap_truncation:
        # after a truncation s_{t+1} is a reset state: bootstrap from the final observation instead
        next_values = jnp.where(traj.truncated, final_value(), next_values)
        terminated = traj.terminated
    else:
        terminated = done
    return gae_advantages(rewards, values, next_values, terminated, done, hparams.gamma, hparams.gae_lambda,
                          unroll=parts.layout.gae_unroll)


def update_obs_stats(parts: Parts, state: RunnerState, raw_obs: jax.Array) -> RunnerState:
    """The observation statistics updated with a rollout's raw observations ``[T, N, D]`` (every
    device's), after the batch was normalised with the ones the rollout used."""
    if not parts.config.normalize_obs:
        return state
    return state.replace(obs_rms=rms_update(state.obs_rms, parts.comm.gather(raw_obs, axis=1)))


# --- the optimiser -----------------------------------------------------------------------------

def make_optimizer(hparams: HParams, clip_per_network: bool = False) -> optax.GradientTransformation:
    """Gradient clipping (the joint global norm, or each network's: :func:`clip_by_network_norm`),
    then Adam's scaling.

    The learning rate is applied outside optax so that it can be traced and annealed
    without living in the optimiser state.
    """
    clip = clip_by_network_norm if clip_per_network else optax.clip_by_global_norm
    return optax.chain(clip(hparams.max_grad_norm), optax.scale_by_adam(eps=hparams.adam_eps))


CRITIC_MODULES = ("critic_torso", "value_head")  # the critic's own modules in the actor-critics' parameters


def critic_leaves(tree: Any) -> Any:
    """A tree of bools like the actor-critic's parameters ``tree``: True on the critic's own leaves
    (under a module of :data:`CRITIC_MODULES`), False on the rest (the actor's and shared parts)."""
    def is_critic(path, _):
        return any(getattr(k, "key", None) in CRITIC_MODULES for k in path)

    return jax.tree_util.tree_map_with_path(is_critic, tree)


def clip_by_network_norm(max_norm: jax.Array) -> optax.GradientTransformation:
    """Clip the critic's gradient ``g_c`` and the rest ``g_a`` (the actor's, shared parts
    included) each to global norm ``max_norm``: ``g * min(1, max_norm / ||g||)`` per part, as
    two optimisers clipping apart do (optax's ``clip_by_global_norm`` applied to each)."""

    def scale(updates, mask):
        norm = optax.tree.norm(jax.tree.map(lambda u, m: jnp.where(m, u, 0.0), updates, mask))
        return jnp.where(norm < max_norm, 1.0, max_norm / norm)  # optax's formula

    def update(updates, state, params=None):
        del params
        critic = critic_leaves(updates)
        actor = jax.tree.map(lambda m: not m, critic)
        s_critic, s_actor = scale(updates, critic), scale(updates, actor)
        return jax.tree.map(lambda u, m: u * jnp.where(m, s_critic, s_actor).astype(u.dtype), updates, critic), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


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


# --- epochs of minibatches ----------------------------------------------------------------------

def minibatch_order(permute: Callable[[jax.Array, int], jax.Array], key: jax.Array, n: int, num_minibatches: int,
                    minibatch_size: int) -> jax.Array:
    """``[num_minibatches, minibatch_size]`` row indices: a permutation of ``n`` rows cut into
    minibatches (rows past ``num_minibatches * minibatch_size`` left out)."""
    order = permute(key, n)
    used = num_minibatches * minibatch_size
    return (order if used == n else order[:used]).reshape(num_minibatches, minibatch_size)


def scan_epochs(epoch: Callable[[Any, jax.Array], tuple[Any, Any]], carry: Any, key: jax.Array, num_epochs: int):
    """``num_epochs`` passes of ``epoch(carry, key)`` in one ``lax.scan``, each with its own key;
    ``(carry, outputs stacked [num_epochs, ...])``. PPO's update and the RLHF fits share it."""
    return jax.lax.scan(epoch, carry, jax.random.split(key, num_epochs))


def minibatch_step(parts: Parts, opt: Optimiser, carry: MinibatchCarry, mb: Any):
    """One gradient step of the PPO loss on a minibatch; with data parallelism each device takes
    its share of it (the policy kind's ``loss_inputs`` says how its batch is shared and re-run)."""
    params, opt_state = carry.params, carry.opt_state
    comm = parts.comm
    if parts.config.norm_adv:  # statistics of the whole minibatch (every device holds all of it)
        mb = mb._replace(advantage=losses.normalize_advantages(mb.advantage))
    apply_fn, mine = parts.policy.loss_inputs(parts, mb)
    loss = parts.loss(apply_fn)
    grads, info = jax.grad(loss, has_aux=True)(params, mine, opt.hparams, opt.kl_coef)
    grads, info = comm.mean(grads), comm.mean(info)
    updates, opt_state = opt.tx.update(grads, opt_state, params)
    params = jax.tree_util.tree_map(lambda p, u: p - opt.lr * u, params, updates)
    return MinibatchCarry(params, opt_state), info


def batch_as_collected(params: Any, batch: Any, hparams: HParams) -> Any:
    """Every epoch learns from the advantages the batch was made with."""
    return batch


def optimise(parts: Parts, opt: Optimiser, batch: Any, params: Any, opt_state: Any, key: jax.Array,
             epoch_batch: Callable[[Any, Any, HParams], Any] = batch_as_collected, run_epoch: Callable | None = None):
    """PPO's policy step: ``update_epochs`` epochs of ``run_epoch`` (the policy kind's by default;
    its ``run_trajectory_epoch`` for minibatches of whole trajectories), stopping early once an
    epoch's mean KL passes ``target_kl`` (if > 0). Each epoch learns from ``epoch_batch(params at
    its start, batch, hparams)``: the batch as collected, or with its advantages recomputed (the
    policy kind's ``recompute_advantages``).

    Returns ``(params, opt_state, LossInfo averaged over the epochs run, epochs run)``.
    """
    target_kl = opt.hparams.target_kl
    run_epoch = parts.policy.run_epoch if run_epoch is None else run_epoch

    def run(params, opt_state, key):
        return run_epoch(parts, opt, epoch_batch(params, batch, opt.hparams), params, opt_state, key)

    def skip(params, opt_state, key):
        return params, opt_state, losses.LossInfo(*[jnp.zeros((), jnp.float32)] * len(losses.LossInfo._fields))

    def epoch(carry: EpochCarry, key: jax.Array):
        params, opt_state, info = parts.layout.skip_stopped(carry.stopped, skip, run, carry.params,
                                                            carry.opt_state, key)
        stopped = carry.stopped | ((target_kl > 0) & (info.approx_kl > target_kl))
        return EpochCarry(params, opt_state, stopped), (info, ~carry.stopped)

    start = EpochCarry(params, opt_state, jnp.zeros((), bool))
    end, (infos, ran) = scan_epochs(epoch, start, key, parts.config.update_epochs)
    n_ran = jnp.sum(ran)
    # one reduction over the stacked terms [epochs, 5]
    info = losses.LossInfo(*(jnp.sum(jnp.stack(infos, axis=-1) * ran[:, None], axis=0) / jnp.maximum(n_ran, 1)))
    return end.params, end.opt_state, info, n_ran


def mean_info(info: Any) -> Any:
    """The mean over an epoch's minibatch steps of their ``LossInfo`` (stacked ``[M]``)."""
    return jax.tree_util.tree_map(lambda x: x.mean(axis=0), info)


def adapt_kl(parts: Parts, kl: losses.KLControllerState, params: Any, batch: Any, hparams: HParams):
    """The adaptive penalty's coefficient step, from d = KL[pi_old, pi_new] over the whole batch
    (the policy kind's ``loss_inputs`` re-runs it with the new parameters).

    Returns ``(new controller state, d)``.
    """
    pi, mine = parts.policy.new_policy(parts, params, batch)
    measured = parts.comm.mean(losses.kl_estimate(parts.dist.log_prob(pi, mine.action) - mine.log_prob))
    return losses.adaptive_kl_update(kl, measured, hparams.kl_target), measured


def keep_kl(parts: Parts, kl: losses.KLControllerState, params: Any, batch: Any, hparams: HParams):
    """A fixed coefficient (or none): the state unchanged, and NaN for the measured KL."""
    return kl, jnp.asarray(jnp.nan, jnp.float32)
