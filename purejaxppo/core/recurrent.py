"""Recurrent PPO (``policy="gru"``): a GRU actor-critic whose hidden state is carried across steps,
updates and rollouts, reset at every episode start.

Conventions. ``start[t]`` is true when ``obs[t]`` begins an episode (the step before it
terminated or was truncated, or it is the first observation of the run). At every step the
hidden state is zeroed where ``start`` is true, then the GRU reads the observation::

    h_in[t]      = 0 if start[t] else h[t]
    h[t+1], y[t] = GRU(h_in[t], embed(obs[t]))
    pi[t], V[t]  = heads(y[t])

The rollout keeps the hidden state it started from (``h[0]`` per environment), so the update
re-runs sequences from it with the current parameters. By default a sequence is one
environment's whole rollout of ``num_steps`` steps; with ``seq_len`` = L > 0 the rollout is cut
into ``num_steps / L`` chunks of L consecutive steps, each re-run from the hidden state the
batch pass computed at its first step (``h[0]`` for the first chunk, ``h[cL]`` for chunk c).
Minibatches are sets of sequences (``num_envs * num_steps / L / num_minibatches`` each),
shuffled every epoch; a sequence is never cut or reordered in time. With data parallelism
every device holds the whole batch and re-runs its share of each minibatch's sequences.
The truncation bootstrap values the final observation with the hidden state of the episode
it ends (``h[t+1]``, not reset), in the batched pass: no branch in the rollout.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.initializers import constant

from purejaxppo.core.act import observe
from purejaxppo.core.collectives import LOCAL, Collectives
from purejaxppo.core.config import HParams, PPOConfig
from purejaxppo.core.distributions import mask_logits
from purejaxppo.core.kind import PolicyKind
from purejaxppo.core.networks import (
    _ACTIVATIONS,
    MLP,
    ConvTorso,
    conv_settings,
    gaussian_params,
    orthogonal,
    policy_head_width,
)
from purejaxppo.core.stages import (
    EpisodeStats,
    MinibatchCarry,
    Optimiser,
    StepCarry,
    advantages_and_targets,
    mean_info,
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


class RecurrentActorCritic(nn.Module):
    """Embedding, a GRU cell shared by actor and critic, then an MLP head for each."""

    action_dim: int
    continuous: bool = False
    hidden_size: int = 128
    actor_hidden: tuple[int, ...] = (64,)
    critic_hidden: tuple[int, ...] = (64,)
    activation: str = "tanh"
    log_std_init: float = 0.0
    state_dependent_std: bool = False
    image_shape: tuple[int, ...] = ()  # with conv_channels: the observation as an image [H, W, C]
    conv_channels: tuple[int, ...] = ()  # convolutions before the embedding (none: the embedding alone)
    conv: Any = None  # the layout's convolution (networks.CONVS); None: lax.conv_general_dilated

    def setup(self):
        embed = nn.Dense(self.hidden_size, kernel_init=orthogonal(math.sqrt(2)), bias_init=constant(0.0))
        if self.conv_channels:
            embed = nn.Sequential([ConvTorso(self.image_shape, self.conv_channels, conv=self.conv), embed])
        self.embed = embed
        self.cell = nn.GRUCell(features=self.hidden_size)
        self.actor_torso = MLP(tuple(self.actor_hidden), self.activation)
        self.critic_torso = MLP(tuple(self.critic_hidden), self.activation)
        width = policy_head_width(self.action_dim, self.continuous, self.state_dependent_std)
        self.policy_head = nn.Dense(width, kernel_init=orthogonal(0.01), bias_init=constant(0.0))
        self.value_head = nn.Dense(1, kernel_init=orthogonal(1.0), bias_init=constant(0.0))
        if self.continuous and not self.state_dependent_std:
            self.log_std = self.param("log_std", constant(self.log_std_init), (self.action_dim,))

    def core(self, h: jax.Array, obs: jax.Array, start: jax.Array) -> tuple[jax.Array, jax.Array]:
        """One step: ``(h [N, H], obs [N, D], start [N]) -> (next h, features y [N, H])``."""
        h = jnp.where(start[..., None], 0.0, h)
        return self.cell(h, _ACTIVATIONS[self.activation](self.embed(obs)))

    def policy(self, y: jax.Array):
        out = self.policy_head(self.actor_torso(y))
        if self.continuous:
            return gaussian_params(out, None if self.state_dependent_std else self.log_std, self.log_std_init)
        return out

    def value(self, y: jax.Array) -> jax.Array:
        return self.value_head(self.critic_torso(y))[..., 0]

    def __call__(self, h, obs, start):
        h, y = self.core(h, obs, start)
        return h, self.policy(y), self.value(y)


def make_recurrent_network(config: PPOConfig, env: Any, layout: Any = None) -> RecurrentActorCritic:
    """The recurrent actor-critic for ``config`` and ``env`` (JAX's own weight gradient and float32,
    whatever the layout; the layout's convolution)."""
    continuous = env.action_kind == "continuous"
    return RecurrentActorCritic(
        action_dim=env.action_dim if continuous else env.num_actions,
        continuous=continuous,
        hidden_size=config.gru_hidden,
        actor_hidden=tuple(config.actor_hidden),
        critic_hidden=tuple(config.critic_hidden),
        activation=config.activation,
        log_std_init=config.log_std_init,
        state_dependent_std=config.state_dependent_std,
        **conv_settings(config, env, None if layout is None else layout.conv),
    )


def init_params(network: RecurrentActorCritic, key: jax.Array, obs_dim: int):
    """Parameters for observations of length ``obs_dim``."""
    return network.init(key, jnp.zeros((1, network.hidden_size)), jnp.zeros((1, obs_dim)), jnp.ones((1,), bool))


class Sequences(NamedTuple):
    """What the network reads to re-run a set of environments' rollouts."""

    obs: jax.Array  # [T, n, D] normalised as the acting policy saw them
    start: jax.Array  # [T, n] obs[t] begins an episode
    h0: jax.Array  # [n, H] hidden state before the first step


def unroll(network: RecurrentActorCritic, params: Any, seq: Sequences):
    """Re-run sequences: ``(features y [T, n, H], hidden states after each step [T, n, H])``."""

    def step(h, inputs):
        obs_t, start_t = inputs
        h, y = network.apply(params, h, obs_t, start_t, method=RecurrentActorCritic.core)
        return h, (y, h)

    _, (ys, hs) = jax.lax.scan(step, seq.h0, (seq.obs, seq.start))
    return ys, hs


def sequence_apply(network: RecurrentActorCritic):
    """``apply(params, Sequences) -> (policy output [T * n, ...], values [T * n])`` for ``ppo_loss``: the
    sequences re-run, then flattened time-major (the order of :func:`flat`)."""

    def apply(params, seq: Sequences):
        ys, _ = unroll(network, params, seq)
        ys = flat(ys)
        pi = network.apply(params, ys, method=RecurrentActorCritic.policy)
        return pi, network.apply(params, ys, method=RecurrentActorCritic.value)

    return apply


def flat(x: jax.Array) -> jax.Array:
    """``[T, n, ...] -> [T * n, ...]``."""
    assert x.ndim >= 2, f"flat: expected [T, n, ...], got shape {x.shape}"
    return x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])


def chunk(x: jax.Array, length: int) -> jax.Array:
    """``[T, N, ...] -> [L, (T / L) * N, ...]``: each environment's steps cut into chunks of ``length``
    consecutive steps; sequence ``c * N + n`` is environment n's steps ``c * L`` to ``(c + 1) * L - 1``."""
    assert x.ndim >= 2 and x.shape[0] % length == 0, f"chunk: [T, N, ...] with T a multiple of {length}, got {x.shape}"
    t, n = x.shape[:2]
    x = x.reshape((t // length, length, n) + x.shape[2:])
    return jnp.swapaxes(x, 0, 1).reshape((length, (t // length) * n) + x.shape[3:])


class RecurrentTransition(NamedTuple):
    obs: jax.Array  # [N, D] raw
    start: jax.Array  # [N]
    action: jax.Array
    log_prob: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    final_obs: jax.Array  # [N, D] the observation the step reached, before any reset
    mask: jax.Array | None = None  # [N, A] the action mask (masked environments only)


def collect(parts: Parts, state: RunnerState, key: jax.Array):
    """``num_steps`` steps of this device's environments with the recurrent policy; the trajectory
    ``[T, N, ...]`` and the hidden state the rollout started from."""
    n_envs, comm, act = parts.config.num_envs, parts.comm, parts.act

    def step(carry, key_t):
        base, h, start = carry
        act_key_t, env_key_t = jax.random.split(key_t)
        mask = parts.action_mask(base.env_state)
        h, action, log_prob = act(state.params, state.obs_rms, h, base.obs, start, act_key_t, mask=mask)
        next_obs, env_state, reward, terminated, truncated, final_obs = parts.vstep(
            comm.own(jax.random.split(env_key_t, n_envs)), base.env_state, action)
        done = terminated | truncated
        ep_ret, ep_len, stats = track_episodes(base, reward, done)
        t = RecurrentTransition(base.obs, start, action, log_prob, reward, terminated, truncated, final_obs, mask)
        return (StepCarry(env_state, next_obs, ep_ret, ep_len, stats), h, done), t

    base = rollout_start(state, EpisodeStats.zeros((parts.num_local_envs,)))  # summed once, after the rollout
    (end, h, start), traj = jax.lax.scan(step, (base, state.hidden, state.starts),
                                         jax.random.split(key, parts.config.num_steps),
                                         unroll=parts.layout.rollout_unroll)
    h0 = state.hidden
    state = rollout_end(state, end, hidden=h, starts=start)
    return state, (traj, h0), jax.tree_util.tree_map(lambda x: comm.sum(jnp.sum(x)), end.stats)


class RecurrentBatch(NamedTuple):
    """A training batch kept as sequences: every field ``[L, S, ...]`` (L steps of S sequences) except
    ``obs.h0 [S, H]``; a minibatch has the same layout with fewer sequences."""

    obs: Sequences
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    advantage: jax.Array
    target: jax.Array
    mask: jax.Array | None = None  # action masks (masked environments only)


def make_batch(parts: Parts, state: RunnerState, rollout, hparams: HParams):
    """Values of this device's sequences (re-run from their first hidden state), truncation values,
    GAE; then every device's environments, cut into sequences of ``seq_len`` steps."""
    traj, h0 = rollout
    config, network, comm = parts.config, parts.network, parts.comm
    state, rewards = scale_rewards(parts, state, traj, hparams)
    seq = Sequences(observe(config, state.obs_rms, traj.obs), traj.start, h0)
    ys, hs = unroll(network, state.params, seq)
    values = network.apply(state.params, ys, method=RecurrentActorCritic.value)  # [T, N]
    _, y_last = network.apply(state.params, hs[-1], observe(config, state.obs_rms, state.obs), state.starts,
                              method=RecurrentActorCritic.core)
    last_value = network.apply(state.params, y_last, method=RecurrentActorCritic.value)

    def final_value():  # the final observation continues its own episode: the hidden state after step t, not reset
        final = observe(config, state.obs_rms, traj.final_obs)
        _, y_final = network.apply(state.params, hs, final, jnp.zeros(final.shape[:2], bool),
                                   method=RecurrentActorCritic.core)
        return network.apply(state.params, y_final, method=RecurrentActorCritic.value)

    advantages, targets = advantages_and_targets(parts, traj, rewards, values, last_value, final_value, hparams)
    length = config.seq_len or config.num_steps
    # each chunk starts from the hidden state before its first step: h[0], then h after step c * L - 1
    chunk_h0 = jnp.concatenate([h0[None], hs[length - 1:-1:length]], axis=0)  # [T / L, N, H]

    def sequences(x):  # [T, N, ...] of this device -> [L, S, ...] of every device's environments
        return chunk(comm.gather(x, axis=1), length)

    h0 = comm.gather(chunk_h0, axis=1)
    batch = RecurrentBatch(
        Sequences(sequences(seq.obs), sequences(seq.start), h0.reshape((-1,) + h0.shape[2:])),
        *[sequences(x) for x in (traj.action, traj.log_prob, values, advantages, targets)],
        None if traj.mask is None else sequences(traj.mask))
    return update_obs_stats(parts, state, traj.obs), batch


def split_sequences(x: jax.Array, perm: jax.Array, m: int) -> jax.Array:
    """``[L, S, ...] -> [m, L, S / m, ...]``: the sequences in the order ``perm``, cut into ``m`` groups,
    each sequence kept whole and in time order."""
    t, n = x.shape[:2]
    assert perm.shape == (n,) and n % m == 0, f"split_sequences: {n} sequences, perm {perm.shape}, {m} groups"
    x = x[:, perm].reshape((t, m, n // m) + x.shape[2:])
    return jnp.swapaxes(x, 0, 1)


def own(comm, batch: RecurrentBatch) -> RecurrentBatch:
    """This device's share of a batch's sequences (the sequence axis is 1, and 0 for ``h0``), the
    fields other than ``obs`` flattened to ``[L * n, ...]`` in the order of :func:`sequence_apply`."""
    seq, mine = batch.obs, functools.partial(comm.own, axis=1)
    assert seq.h0.shape[0] == seq.obs.shape[1] == batch.action.shape[1], (
        f"own: h0 {seq.h0.shape}, obs {seq.obs.shape} and action {batch.action.shape} hold different sequence counts")
    return RecurrentBatch(Sequences(mine(seq.obs), mine(seq.start), comm.own(seq.h0)),
                          *[None if x is None else flat(mine(x)) for x in batch[1:]])


def run_epoch(parts: Parts, opt: Optimiser, batch: RecurrentBatch, params, opt_state, key: jax.Array):
    """Shuffle the sequences (always by JAX's own permutation: a sequence batch is small), cut them
    into minibatches, a step on each."""
    m, seq = parts.config.num_minibatches, batch.obs
    n = seq.h0.shape[0]
    perm = jax.random.permutation(key, n)
    shuffled = RecurrentBatch(
        Sequences(split_sequences(seq.obs, perm, m), split_sequences(seq.start, perm, m),
                  seq.h0[perm].reshape((m, n // m) + seq.h0.shape[1:])),
        *[None if x is None else split_sequences(x, perm, m) for x in batch[1:]],  # [m, L, S / m, ...]
    )
    step = functools.partial(minibatch_step, parts, opt)
    end, info = jax.lax.scan(step, MinibatchCarry(params, opt_state), shuffled)
    return end.params, end.opt_state, mean_info(info)


def loss_inputs(parts: Parts, mb: RecurrentBatch):
    """Minibatches of sequences, re-run from their first hidden state: ``(sequence_apply, this
    device's sequences)``; with action masks the sequences' ``obs`` is ``(Sequences, mask)`` and the
    policy output is masked."""
    mine, apply = own(parts.comm, mb), sequence_apply(parts.network)
    if mb.mask is None:
        return apply, mine

    def masked(params, seq_and_mask):
        seq, mask = seq_and_mask
        pi, values = apply(params, seq)
        return mask_logits(pi, mask), values

    return masked, mine._replace(obs=(mine.obs, mine.mask))


def new_policy(parts: Parts, params: Any, batch: RecurrentBatch):
    """The (masked) policy output of ``params`` on this device's sequences of ``batch``, and those sequences."""
    mine = own(parts.comm, batch)
    pi, _ = sequence_apply(parts.network)(params, mine.obs)
    return mask_logits(pi, mine.mask), mine


def make_recurrent_act(config, network: RecurrentActorCritic, dist, comm: Collectives = LOCAL):
    """``act(params, obs_rms, h, obs, start, key, deterministic=False, mask=None) -> (next h, action, log_prob)``.

    ``mask`` (the environment's action mask, shaped as the logits) rules actions out. With data parallelism (``comm``) the noise is drawn for all environments, as on one device,
    and each device keeps its share."""

    def act_fn(params, obs_rms, h, obs, start, key, deterministic: bool = False, mask: jax.Array | None = None):
        h, y = network.apply(params, h, observe(config, obs_rms, obs), start, method=RecurrentActorCritic.core)
        pi = mask_logits(network.apply(params, y, method=RecurrentActorCritic.policy), mask)
        if deterministic:
            action = dist.mode(pi)
        else:
            action = comm.own(dist.sample(key, jax.tree_util.tree_map(comm.gather, pi)))
        return h, action, dist.log_prob(pi, action)

    return act_fn


def init_memory(config: PPOConfig, shape: tuple[int, ...]) -> jax.Array:
    """``[*shape, gru_hidden]`` zeros: the hidden state at an episode's start."""
    return jnp.zeros((*shape, config.gru_hidden), jnp.float32)


def stepper(act):
    """``step(params, obs_rms, h, obs, key, deterministic) -> (next h, action, log_prob)``: the
    recurrent ``act`` inside one episode (no start to reset at)."""

    def step(params, obs_rms, h, obs, key, deterministic=False, mask=None):
        return act(params, obs_rms, h, obs, jnp.zeros(obs.shape[:-1], bool), key, deterministic, mask)

    return step


KIND = PolicyKind(
    name="gru",
    stateful=True,
    make_network=make_recurrent_network,
    init_params=init_params,
    make_act=make_recurrent_act,
    init_memory=init_memory,
    stepper=stepper,
    collect=collect,
    make_batch=make_batch,
    loss_inputs=loss_inputs,
    new_policy=new_policy,
    run_epoch=run_epoch,
)
