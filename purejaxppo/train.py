"""``make_train(config) -> train(key, hparams)``: a whole PPO run as one pure function.

The run is nested ``lax.scan``s and ``jit`` compiles it into one XLA program::

    train(key, hparams):
        state = init(key, hparams)
        scan over num_updates:                      # one PPO iteration
            scan over num_steps:                    #   rollout: N envs, vmapped
                pi(a|s) -> sample a -> env.step
            V(s_t), V(final obs), GAE(gamma, lambda)
            scan over update_epochs:                #   optimise L^CLIP (+ KL) - c1 L^VF + c2 S
                shuffle; scan over num_minibatches: grad -> clip -> Adam
            adaptive KL coefficient
        return state, metrics                       # metrics: one row per update

Static settings (shapes, switches) come from ``config`` and are closed over; float
hyperparameters come in through ``hparams`` as traced arrays, so changing them never
recompiles and ``jax.vmap`` can sweep them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from purejaxppo import losses
from purejaxppo.config import ConfigError, HParams, PPOConfig, validate
from purejaxppo.envs import EnvAdapter, make_env
from purejaxppo.gae import gae_advantages
from purejaxppo.networks import ActorCritic, distribution, make_network
from purejaxppo.normalize import RunningMeanStd, rms_init, rms_normalize, rms_update
from purejaxppo.shuffle import permutation

METRIC_NAMES = (
    "charts/episodic_return",
    "charts/episodic_length",
    "charts/episodes",
    "charts/learning_rate",
    "losses/policy_loss",
    "losses/value_loss",
    "losses/entropy",
    "losses/approx_kl",
    "losses/clipfrac",
    "losses/kl_coef",
    "losses/explained_variance",
    "losses/epochs",
    "losses/post_update_kl",
)


@struct.dataclass
class RunnerState:
    """Everything a run carries from one update to the next."""

    params: Any
    opt_state: Any
    env_state: Any  # [N, ...] environment states
    obs: jax.Array  # [N, obs_dim] current raw observations
    key: jax.Array
    obs_rms: RunningMeanStd  # running observation statistics ([obs_dim])
    ret_rms: RunningMeanStd  # running statistics of the discounted return ([])
    disc_return: jax.Array  # [N] discounted return used for reward scaling
    episode_return: jax.Array  # [N] return of the running episode
    episode_length: jax.Array  # [N] length of the running episode
    kl: losses.KLControllerState
    update_step: jax.Array  # [] updates done so far


class Transition(NamedTuple):
    """One rollout step of N environments (time-major when stacked: ``[T, N, ...]``)."""

    obs: jax.Array  # [N, obs_dim] raw observation the action was chosen from
    action: jax.Array  # [N] or [N, D]
    log_prob: jax.Array  # [N]
    reward: jax.Array  # [N] raw reward
    terminated: jax.Array  # [N]
    truncated: jax.Array  # [N]
    final_value: jax.Array  # [N] V(observation reached before the reset) where truncated, else 0


class Batch(NamedTuple):
    """A flat training batch ``[B, ...]``."""

    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    advantage: jax.Array
    target: jax.Array


class Trainer(NamedTuple):
    """The pure pieces of a run; ``train`` composes them."""

    config: PPOConfig
    env: EnvAdapter
    network: ActorCritic
    init: Callable[[jax.Array, HParams], RunnerState]
    update: Callable[[RunnerState, HParams], tuple[RunnerState, dict[str, jax.Array]]]
    train: Callable[..., tuple[RunnerState, dict[str, jax.Array]]]


def check_shards(config: PPOConfig, num_shards: int) -> None:
    """A data-parallel run over ``num_shards`` devices needs equal shares of envs and minibatches."""
    if config.num_envs % num_shards:
        raise ConfigError(
            f"num_envs: {config.num_envs} environments cannot be split evenly over {num_shards} devices; "
            f"accepted: a multiple of {num_shards}"
        )
    if config.minibatch_size % num_shards:
        raise ConfigError(
            f"num_minibatches: minibatches of {config.minibatch_size} samples cannot be split evenly over "
            f"{num_shards} devices; accepted: num_envs * num_steps / num_minibatches a multiple of {num_shards}"
        )


def make_optimizer(hparams: HParams) -> optax.GradientTransformation:
    # The learning rate is applied outside optax so that it can be traced and annealed
    # without living in the optimiser state.
    return optax.chain(
        optax.clip_by_global_norm(hparams.max_grad_norm),
        optax.scale_by_adam(eps=hparams.adam_eps),
    )


def make_trainer(config: PPOConfig, axis_name: str | None = None, num_shards: int = 1) -> Trainer:
    """Validate ``config`` and build the pure ``init``, ``update`` and ``train`` functions.

    With ``axis_name`` and ``num_shards > 1`` the functions are the per-device body of a
    data-parallel run (see :mod:`purejaxppo.parallel`), to be called under ``shard_map``
    over a mesh axis of that name and size: each device steps ``num_envs / num_shards``
    environments, the trajectory is gathered so that every device holds the whole batch,
    each device computes the gradient of its share of every minibatch, and the gradients
    are averaged with ``lax.pmean``. Random draws, the shuffle and the normalisations are
    the ones of the one-device run, so both compute the same update up to float rounding.
    Otherwise (the default) this is the ordinary one-device program, without collectives.
    """
    validate(config)
    env, _ = make_env(config.env)
    network = make_network(config, env)
    dist = distribution(env.action_kind == "continuous")
    n_envs, n_steps = config.num_envs, config.num_steps
    n_updates, n_mb, mb_size = config.num_updates, config.num_minibatches, config.minibatch_size
    batch_size = config.batch_size
    default_hparams = HParams.from_config(config)
    vstep = jax.vmap(lambda k, s, a: env.step(k, s, a, clip=config.clip_actions))

    # ---- data parallelism (identities on one device) -------------------------------------
    data_parallel = axis_name is not None and num_shards > 1
    if data_parallel:
        check_shards(config, num_shards)
    n_local = n_envs // num_shards if data_parallel else n_envs

    def own(x: jax.Array, axis: int = 0) -> jax.Array:
        """This device's equal share of ``x`` along ``axis`` (environments or batch rows)."""
        if not data_parallel:
            return x
        size = x.shape[axis] // num_shards
        return jax.lax.dynamic_slice_in_dim(x, jax.lax.axis_index(axis_name) * size, size, axis)

    def gather(x: jax.Array, axis: int = 0) -> jax.Array:
        """Every device's share of ``x``, concatenated along ``axis`` (the inverse of ``own``)."""
        return jax.lax.all_gather(x, axis_name, axis=axis, tiled=True) if data_parallel else x

    def psum(x):
        return jax.lax.psum(x, axis_name) if data_parallel else x

    def pmean(x):
        return jax.lax.pmean(x, axis_name) if data_parallel else x

    def normalize_obs(rms: RunningMeanStd, obs: jax.Array) -> jax.Array:
        return rms_normalize(rms, obs, config.clip_obs) if config.normalize_obs else obs

    # ------------------------------------------------------------------ init
    def init(key: jax.Array, hparams: HParams) -> RunnerState:
        key, net_key, env_key = jax.random.split(key, 3)
        obs, env_state = jax.vmap(env.reset)(own(jax.random.split(env_key, n_envs)))
        params = network.init(net_key, jnp.zeros((1, env.obs_dim), jnp.float32))
        return RunnerState(
            params=params,
            opt_state=make_optimizer(hparams).init(params),
            env_state=env_state,
            obs=obs,
            key=key,
            obs_rms=rms_init((env.obs_dim,)),
            ret_rms=rms_init(()),
            disc_return=jnp.zeros((n_local,), jnp.float32),
            episode_return=jnp.zeros((n_local,), jnp.float32),
            episode_length=jnp.zeros((n_local,), jnp.int32),
            kl=losses.kl_controller_init(hparams.kl_coef),
            update_step=jnp.zeros((), jnp.int32),
        )

    # ------------------------------------------------------------------ rollout
    def rollout(state: RunnerState, key: jax.Array):
        def env_step(carry, key_t):
            env_state, obs, ep_ret, ep_len, stats = carry
            act_key_t, env_key_t = jax.random.split(key_t)
            env_keys_t = own(jax.random.split(env_key_t, n_envs))
            pi = network.apply(state.params, normalize_obs(state.obs_rms, obs), method=ActorCritic.policy)
            # the action noise of all N environments, as on one device, of which this device uses its share
            action = own(dist.sample(act_key_t, jax.tree_util.tree_map(gather, pi)))
            log_prob = dist.log_prob(pi, action)
            next_obs, env_state, reward, terminated, truncated, final_obs = vstep(env_keys_t, env_state, action)
            done = terminated | truncated
            if config.bootstrap_truncation:
                # V(final obs) is needed only where a time limit cut the episode; elsewhere it is
                # V(next obs), which the batched critic pass computes anyway. Truncations are rare,
                # so the critic runs here only on steps that have one (both branches under vmap).
                final_value = jax.lax.cond(
                    jnp.any(truncated),
                    lambda o: network.apply(state.params, normalize_obs(state.obs_rms, o), method=ActorCritic.value),
                    lambda o: jnp.zeros((n_local,), jnp.float32),
                    final_obs,
                )
            else:
                final_value = jnp.zeros((n_local,), jnp.float32)
            ep_ret = ep_ret + reward
            ep_len = ep_len + 1
            stats = (
                stats[0] + jnp.sum(jnp.where(done, ep_ret, 0.0)),
                stats[1] + jnp.sum(jnp.where(done, ep_len, 0)),
                stats[2] + jnp.sum(done),
            )
            ep_ret = jnp.where(done, 0.0, ep_ret)
            ep_len = jnp.where(done, 0, ep_len)
            transition = Transition(obs, action, log_prob, reward, terminated, truncated, final_value)
            return (env_state, next_obs, ep_ret, ep_len, stats), transition

        zero_stats = (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))
        carry = (state.env_state, state.obs, state.episode_return, state.episode_length, zero_stats)
        carry, traj = jax.lax.scan(env_step, carry, jax.random.split(key, n_steps))
        env_state, obs, ep_ret, ep_len, stats = carry
        stats = jax.tree_util.tree_map(psum, stats)
        state = state.replace(env_state=env_state, obs=obs, episode_return=ep_ret, episode_length=ep_len)
        return state, traj, stats

    # ------------------------------------------------------------------ advantages
    def scale_rewards(state: RunnerState, traj: Transition, gamma: jax.Array):
        if not config.normalize_reward:
            return state, traj.reward
        done = traj.terminated | traj.truncated

        def step(g, inputs):
            r_t, done_t = inputs
            g = g * gamma + r_t
            return jnp.where(done_t, 0.0, g), g

        disc_return, returns_t = jax.lax.scan(step, state.disc_return, (traj.reward, done))
        ret_rms = rms_update(state.ret_rms, gather(returns_t, axis=1))
        rewards = jnp.clip(traj.reward / jnp.sqrt(ret_rms.var + 1e-8), -config.clip_reward, config.clip_reward)
        return state.replace(disc_return=disc_return, ret_rms=ret_rms), rewards

    def make_batch(state: RunnerState, traj: Transition, hparams: HParams):
        state, rewards = scale_rewards(state, traj, hparams.gamma)
        obs = normalize_obs(state.obs_rms, traj.obs)  # [T, N, D]
        values = network.apply(state.params, obs, method=ActorCritic.value)  # [T, N]
        done = traj.terminated | traj.truncated
        last_value = network.apply(state.params, normalize_obs(state.obs_rms, state.obs), method=ActorCritic.value)
        next_values = jnp.concatenate([values[1:], last_value[None]], axis=0)  # V(s_{t+1})
        if config.bootstrap_truncation:
            # after a truncation s_{t+1} is a reset state: bootstrap from the final observation instead
            next_values = jnp.where(traj.truncated, traj.final_value, next_values)
            terminated = traj.terminated
        else:
            terminated = done
        advantages, targets = gae_advantages(
            rewards, values, next_values, terminated, done, hparams.gamma, hparams.gae_lambda
        )
        # [T, N, ...] -> [T * N, ...]; with data parallelism, every device's environments first
        flat = lambda x: gather(x, axis=1).reshape((batch_size,) + x.shape[2:])  # noqa: E731
        batch = Batch(flat(obs), flat(traj.action), flat(traj.log_prob), flat(values), flat(advantages), flat(targets))
        if config.normalize_obs:
            state = state.replace(obs_rms=rms_update(state.obs_rms, gather(traj.obs, axis=1)))
        return state, batch

    # ------------------------------------------------------------------ loss
    def loss_fn(params, mb: Batch, hparams: HParams, kl_coef: jax.Array):
        pi, values = network.apply(params, mb.obs)
        log_prob = dist.log_prob(pi, mb.action)
        log_ratio = log_prob - mb.log_prob
        ratio = jnp.exp(log_ratio)
        pg_loss, clipfrac = losses.clipped_surrogate_loss(ratio, mb.advantage, hparams.clip_eps)
        approx_kl = losses.kl_estimate(log_ratio)
        if config.kl_penalty != "off":
            pg_loss = pg_loss + kl_coef * approx_kl
        v_loss = losses.value_loss(values, mb.value, mb.target, hparams.vf_clip_eps, config.clip_vloss)
        entropy = jnp.mean(dist.entropy(pi))
        total = pg_loss - hparams.ent_coef * entropy + hparams.vf_coef * v_loss
        metrics = jnp.stack([pg_loss, v_loss, entropy, approx_kl, clipfrac])
        return total, metrics

    grad_fn = jax.grad(loss_fn, has_aux=True)

    # ------------------------------------------------------------------ one update
    def update(state: RunnerState, hparams: HParams):
        key, rollout_key, epoch_key = jax.random.split(state.key, 3)
        state, traj, (ret_sum, len_sum, n_episodes) = rollout(state, rollout_key)
        # The batch is normalised with the statistics the rollout used; they are then updated.
        state, batch = make_batch(state, traj, hparams)

        if config.anneal_lr:
            lr = hparams.lr * (1.0 - state.update_step.astype(jnp.float32) / n_updates)
        else:
            lr = hparams.lr
        tx = make_optimizer(hparams)
        kl_coef = state.kl.coef

        def minibatch_step(carry, mb: Batch):
            params, opt_state = carry
            if config.norm_adv:  # statistics of the whole minibatch (every device holds all of it)
                mb = mb._replace(advantage=losses.normalize_advantages(mb.advantage))
            # the gradient of this device's share of the minibatch, averaged over devices
            grads, metrics = grad_fn(params, jax.tree_util.tree_map(own, mb), hparams, kl_coef)
            grads, metrics = pmean(grads), pmean(metrics)
            updates, opt_state = tx.update(grads, opt_state, params)
            params = jax.tree_util.tree_map(lambda p, u: p - lr * u, params, updates)
            return (params, opt_state), metrics

        def run_epoch(params, opt_state, key):
            perm = permutation(key, batch_size)
            shuffled = jax.tree_util.tree_map(lambda x: x[perm].reshape((n_mb, mb_size) + x.shape[1:]), batch)
            (params, opt_state), metrics = jax.lax.scan(minibatch_step, (params, opt_state), shuffled)
            return params, opt_state, metrics.mean(axis=0)

        def epoch(carry, key):
            params, opt_state, stopped = carry

            def skip(params, opt_state, key):
                return params, opt_state, jnp.zeros((5,), jnp.float32)

            params, opt_state, metrics = jax.lax.cond(stopped, skip, run_epoch, params, opt_state, key)
            ran = ~stopped
            # Early stop: an epoch whose mean KL passed target_kl ends the update.
            stopped = stopped | ((hparams.target_kl > 0) & (metrics[3] > hparams.target_kl))
            return (params, opt_state, stopped), (metrics, ran)

        epoch_keys = jax.random.split(epoch_key, config.update_epochs)
        (params, opt_state, _), (metrics, ran) = jax.lax.scan(
            epoch, (state.params, state.opt_state, jnp.zeros((), bool)), epoch_keys
        )
        n_ran = jnp.sum(ran)
        metrics = jnp.sum(metrics * ran[:, None], axis=0) / jnp.maximum(n_ran, 1)

        kl_state = state.kl
        if config.kl_penalty == "adaptive":
            # d = KL[pi_old, pi_new] over the whole batch, with the updated parameters.
            pi = network.apply(params, own(batch.obs), method=ActorCritic.policy)
            measured_kl = pmean(losses.kl_estimate(dist.log_prob(pi, own(batch.action)) - own(batch.log_prob)))
            kl_state = losses.adaptive_kl_update(kl_state, measured_kl, hparams.kl_target)
        else:
            measured_kl = jnp.asarray(jnp.nan, jnp.float32)

        state = state.replace(
            params=params,
            opt_state=opt_state,
            key=key,
            kl=kl_state,
            update_step=state.update_step + 1,
        )
        n_ep = jnp.maximum(n_episodes, 1).astype(jnp.float32)
        out = {
            "charts/episodic_return": jnp.where(n_episodes > 0, ret_sum / n_ep, jnp.nan),
            "charts/episodic_length": jnp.where(n_episodes > 0, len_sum.astype(jnp.float32) / n_ep, jnp.nan),
            "charts/episodes": n_episodes,
            "charts/learning_rate": jnp.asarray(lr, jnp.float32),
            "losses/policy_loss": metrics[0],
            "losses/value_loss": metrics[1],
            "losses/entropy": metrics[2],
            "losses/approx_kl": metrics[3],
            "losses/clipfrac": metrics[4],
            "losses/kl_coef": kl_coef,
            # The barrier keeps XLA from fusing this reduction with the batch's producers, which
            # it would do differently for different vmap widths (a sweep's per-device block).
            "losses/explained_variance": losses.explained_variance(
                *jax.lax.optimization_barrier((batch.value, batch.target))
            ),
            "losses/epochs": n_ran,
            "losses/post_update_kl": measured_kl,
        }
        return state, out

    # ------------------------------------------------------------------ the run
    def train(key: jax.Array, hparams: HParams | None = None):
        """Train from ``key``; returns ``(final RunnerState, metrics {name: [num_updates]})``."""
        hparams = default_hparams if hparams is None else hparams
        state = init(key, hparams)
        return jax.lax.scan(lambda s, _: update(s, hparams), state, None, length=n_updates)

    return Trainer(config, env, network, init, update, train)


def make_train(config: PPOConfig) -> Callable[..., tuple[RunnerState, dict[str, jax.Array]]]:
    """``train(key, hparams=None) -> (final_state, metrics)`` for ``config``; pure and jittable.

    Example:
        >>> import jax
        >>> from purejaxppo import PPOConfig, make_train
        >>> config = PPOConfig(env="CartPole-v1", total_timesteps=4096)
        >>> state, metrics = jax.jit(make_train(config))(jax.random.key(0))
        >>> metrics["charts/episodic_return"].shape
        (8,)
    """
    return make_trainer(config).train
