"""Feed-forward PPO (``policy="mlp"``): the stages of a policy that sees one observation at a time.

A rollout is a ``[T, N]`` trajectory; the batch is its ``T * N`` rows, shuffled each epoch and cut
into minibatches of rows. :data:`KIND` bundles the stages; :mod:`purejaxppo.core.train` composes them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp

from purejaxppo.core.act import make_act, observe
from purejaxppo.core.config import HParams, PPOConfig
from purejaxppo.core.distributions import mask_logits
from purejaxppo.core.kind import PolicyKind
from purejaxppo.core.networks import ActorCritic, make_network
from purejaxppo.core.stages import (
    EpisodeStats,
    MinibatchCarry,
    Optimiser,
    StepCarry,
    advantages_and_targets,
    mean_info,
    minibatch_order,
    minibatch_step,
    rollout_end,
    rollout_start,
    scale_rewards,
    track_episodes,
    update_obs_stats,
)
from purejaxppo.core.state import RunnerState

if TYPE_CHECKING:
    from purejaxppo.core.parts import Parts


class Transition(NamedTuple):
    """One rollout step of N environments (time-major when stacked: ``[T, N, ...]``)."""

    obs: jax.Array  # [N, obs_dim] raw observation the action was chosen from
    action: jax.Array  # [N] or [N, D]
    log_prob: jax.Array  # [N]
    reward: jax.Array  # [N] raw reward
    terminated: jax.Array  # [N]
    truncated: jax.Array  # [N]
    final_value: jax.Array | None  # [N] V(observation reached before the reset) where truncated, else 0
    final_obs: jax.Array | None = None  # [N, obs_dim] that observation, when the batch pass values it
    mask: jax.Array | None = None  # [N, A] the action mask the action was chosen under (masked environments)


class AdvantageInputs(NamedTuple):
    """What recomputing a batch's advantages with a newer critic needs: this device's environments,
    time-major, as :func:`make_batch` had them (``recompute_advantages`` only)."""

    obs: jax.Array  # [T, N, obs_dim] normalised as the acting policy saw them
    last_obs: jax.Array  # [N, obs_dim] s_T (the observation after the rollout), normalised alike
    final_obs: jax.Array | None  # [T, N, obs_dim] raw observation reached before each truncation (bootstrap only)
    obs_rms: Any  # the statistics that normalised them
    reward: jax.Array  # [T, N] the rewards learnt from (scaled)
    terminated: jax.Array  # [T, N]
    truncated: jax.Array  # [T, N]


class Batch(NamedTuple):
    """A flat training batch ``[B, ...]`` (B = num_envs * num_steps)."""

    obs: jax.Array  # [B, obs_dim] normalised as the acting policy saw them
    action: jax.Array  # [B] or [B, D]
    log_prob: jax.Array  # [B] log pi_old(a|s)
    value: jax.Array  # [B] V_old(s)
    advantage: jax.Array  # [B] GAE
    target: jax.Array  # [B] return targets A + V_old
    mask: jax.Array | None = None  # [B, A] action masks (masked environments only)
    again: AdvantageInputs | None = None  # kept for recompute_advantages; the epochs see None


def critic(parts: Parts, state: RunnerState):
    """``value(raw obs [..., obs_dim]) -> [...]``: the critic of ``state``, normalisation included."""

    def value(o):
        return parts.network.apply(state.params, observe(parts.config, state.obs_rms, o), method=ActorCritic.value)

    return value


def collect(parts: Parts, state: RunnerState, key: jax.Array) -> tuple[RunnerState, Transition, EpisodeStats]:
    """Run ``num_steps`` steps of every environment; returns the trajectory ``[T, N, ...]``."""
    n_envs, comm, layout = parts.config.num_envs, parts.comm, parts.layout
    value = critic(parts, state)

    def step(carry: StepCarry, key_t: jax.Array):
        act_key_t, env_key_t = jax.random.split(key_t)
        env_keys_t = comm.own(jax.random.split(env_key_t, n_envs))
        mask = parts.action_mask(carry.env_state)
        action, log_prob = parts.act(state.params, state.obs_rms, carry.obs, act_key_t, mask=mask)
        next_obs, env_state, reward, terminated, truncated, final_obs = parts.vstep(env_keys_t, carry.env_state, action)
        final_value, final_obs = layout.truncation.in_rollout(value, truncated, final_obs)
        ep_ret, ep_len, stats = track_episodes(carry, reward, terminated | truncated)
        transition = Transition(carry.obs, action, log_prob, reward, terminated, truncated, final_value, final_obs,
                                mask)
        return StepCarry(env_state, next_obs, ep_ret, ep_len, stats), transition

    start = rollout_start(state, EpisodeStats.zeros(layout.episode_sums.zeros(parts.num_local_envs)))
    end, traj = jax.lax.scan(step, start, jax.random.split(key, parts.config.num_steps), unroll=layout.rollout_unroll)
    stats = jax.tree_util.tree_map(layout.episode_sums.total, end.stats)
    return rollout_end(state, end), traj, jax.tree_util.tree_map(comm.sum, stats)


def make_batch(parts: Parts, state: RunnerState, traj: Transition, hparams: HParams) -> tuple[RunnerState, Batch]:
    """Advantages and targets of the trajectory, flattened to a batch of every device's environments.

    The batch is normalised with the statistics the rollout used; they are then updated.
    """
    config, network = parts.config, parts.network
    state, rewards = scale_rewards(parts, state, traj, hparams)
    obs = observe(config, state.obs_rms, traj.obs)  # [T, N, D]
    values = network.apply(state.params, obs, method=ActorCritic.value)  # [T, N]
    value = critic(parts, state)
    last_value = value(state.obs)

    def final_value():  # from the rollout, or valued now as the layout says
        if traj.final_value is not None:
            return traj.final_value
        return parts.layout.truncation.after_rollout(value, traj.truncated, traj.final_obs)

    advantages, targets = advantages_and_targets(parts, traj, rewards, values, last_value, final_value, hparams)

    again = None
    if config.recompute_advantages:
        again = AdvantageInputs(obs, observe(config, state.obs_rms, state.obs), traj.final_obs, state.obs_rms,
                                rewards, traj.terminated, traj.truncated)
    batch = Batch(flat(parts, obs), flat(parts, traj.action), flat(parts, traj.log_prob), flat(parts, values),
                  flat(parts, advantages), flat(parts, targets), None if traj.mask is None else flat(parts, traj.mask),
                  again)
    return update_obs_stats(parts, state, traj.obs), batch


def flat(parts: Parts, x: jax.Array) -> jax.Array:
    """``[T, N, ...] -> [T * N, ...]``; with data parallelism, every device's environments first."""
    return parts.comm.gather(x, axis=1).reshape((parts.config.batch_size,) + x.shape[2:])


def recompute_advantages(parts: Parts, params: Any, batch: Batch, hparams: HParams) -> Batch:
    """``batch`` with its advantages and value targets recomputed by the critic of ``params``: GAE
    over the same rewards and ends from V(s_t), V(s_T) and, at truncations, V(final observation),
    each valued now (Andrychowicz et al. 2021, "What Matters In On-Policy Reinforcement Learning?",
    recommend it at every pass over the data). The old values ``batch.value`` stay: the value
    clip is measured from the critic that collected the batch."""
    advantages, targets = advantages_of(parts, params, batch.again, hparams)
    return batch._replace(advantage=flat(parts, advantages), target=flat(parts, targets), again=None)


def advantages_of(parts: Parts, params: Any, again: AdvantageInputs, hparams: HParams) -> tuple[jax.Array, jax.Array]:
    """GAE and value targets ``[T, n]`` of the trajectories ``again`` from the critic of ``params``:
    V(s_t), V(s_T) and, at truncations, V(final observation), each valued now."""

    def value(obs):  # normalised observations [..., obs_dim] -> [...]
        return parts.network.apply(params, obs, method=ActorCritic.value)

    def final_value():
        return parts.layout.truncation.after_rollout(lambda o: value(observe(parts.config, again.obs_rms, o)),
                                                     again.truncated, again.final_obs)

    return advantages_and_targets(parts, again, again.reward, value(again.obs), value(again.last_obs), final_value,
                                  hparams)


def loss_inputs(parts: Parts, mb: Batch):
    """``(apply(params, obs) -> (policy output, values), this device's rows of the minibatch)``; with
    action masks the rows' ``obs`` is ``(obs, mask)`` and the policy output is masked."""
    mine = jax.tree_util.tree_map(parts.comm.own, mb)
    if mb.mask is None:
        return parts.network.apply, mine

    def apply(params, obs_and_mask):
        obs, mask = obs_and_mask
        pi, values = parts.network.apply(params, obs)
        return mask_logits(pi, mask), values

    return apply, mine._replace(obs=(mine.obs, mine.mask))


def new_policy(parts: Parts, params: Any, batch: Batch):
    """The (masked) policy output of ``params`` on this device's rows of ``batch``, and those rows."""
    mine = jax.tree_util.tree_map(parts.comm.own, batch._replace(again=None))
    return mask_logits(parts.network.apply(params, mine.obs, method=ActorCritic.policy), mine.mask), mine


def run_epoch(parts: Parts, opt: Optimiser, batch: Batch, params: Any, opt_state: Any, key: jax.Array):
    """Shuffle the batch's rows, cut them into minibatches, take a step on each; mean of their LossInfo."""
    config, layout = parts.config, parts.layout
    order = minibatch_order(layout.permute, key, config.batch_size, config.num_minibatches,
                            config.minibatch_size)
    body, xs = layout.feed(lambda carry, mb: minibatch_step(parts, opt, carry, mb), batch, order)
    end, info = jax.lax.scan(body, MinibatchCarry(params, opt_state), xs, unroll=layout.minibatch_unroll)
    return end.params, end.opt_state, mean_info(info)


def trajectory_rows(parts: Parts, params: Any, batch: Batch, envs: jax.Array, hparams: HParams) -> Batch:
    """The rows of ``batch`` that environments ``envs [n]`` collected (``[T * n]``, time-major), as
    collected."""
    config = parts.config
    grid = batch._replace(again=None)
    return jax.tree_util.tree_map(
        lambda x: x.reshape((config.num_steps, config.num_envs) + x.shape[1:])[:, envs].reshape((-1,) + x.shape[1:]),
        grid)


def recomputed_trajectory_rows(parts: Parts, params: Any, batch: Batch, envs: jax.Array, hparams: HParams) -> Batch:
    """The rows of environments ``envs`` with their advantages and value targets recomputed by the
    critic of ``params`` (GAE over their whole trajectories, as :func:`recompute_advantages` does
    for the batch): what Brax's PPO loss computes inside every minibatch step. The old values stay
    (the value clip measures from them)."""
    again = batch.again
    mine = AdvantageInputs(again.obs[:, envs], again.last_obs[envs],
                           None if again.final_obs is None else again.final_obs[:, envs], again.obs_rms,
                           again.reward[:, envs], again.terminated[:, envs], again.truncated[:, envs])
    advantages, targets = advantages_of(parts, params, mine, hparams)
    return trajectory_rows(parts, params, batch, envs, hparams)._replace(advantage=advantages.reshape(-1),
                                                                        target=targets.reshape(-1))


def run_trajectory_epoch(parts: Parts, opt: Optimiser, batch: Batch, params: Any, opt_state: Any, key: jax.Array,
                         rows=trajectory_rows):
    """Shuffle the environments, cut them into ``num_minibatches`` groups, take a step on each group's
    whole trajectories: ``rows(parts, params of the moment, batch, envs, hparams)``; mean of the
    steps' LossInfo (``trajectory_minibatches``)."""
    config = parts.config
    per_minibatch = config.num_envs // config.num_minibatches
    order = minibatch_order(parts.layout.permute, key, config.num_envs, config.num_minibatches, per_minibatch)

    def body(carry: MinibatchCarry, envs: jax.Array):
        return minibatch_step(parts, opt, carry, rows(parts, carry.params, batch, envs, opt.hparams))

    end, info = jax.lax.scan(body, MinibatchCarry(params, opt_state), order, unroll=parts.layout.minibatch_unroll)
    return end.params, end.opt_state, mean_info(info)


def init_params(network: ActorCritic, key: jax.Array, obs_dim: int):
    return network.init(key, jnp.zeros((1, obs_dim), jnp.float32))


def init_memory(config: PPOConfig, shape: tuple[int, ...]):
    """A feed-forward policy carries nothing from step to step."""
    return None


def stepper(act):
    """``step(params, obs_rms, memory, obs, key, deterministic, mask=None) -> (memory, action, log_prob)``."""

    def step(params, obs_rms, memory, obs, key, deterministic=False, mask=None):
        return (memory, *act(params, obs_rms, obs, key, deterministic, mask))

    return step


KIND = PolicyKind(
    name="mlp",
    stateful=False,
    make_network=lambda config, env, layout: make_network(config, env, layout.dot_general, layout.conv),
    init_params=init_params,
    make_act=make_act,
    init_memory=init_memory,
    stepper=stepper,
    collect=collect,
    make_batch=make_batch,
    loss_inputs=loss_inputs,
    new_policy=new_policy,
    run_epoch=run_epoch,
    recompute_advantages=recompute_advantages,
    run_trajectory_epoch=run_trajectory_epoch,
    recomputed_trajectory_rows=recomputed_trajectory_rows,
)
