"""PPO for a language model against a learnt reward, with a KL penalty to the reference.

One iteration, all inside the compiled program:

1. sample ``batch`` prompts and a response to each from the policy (``lax.scan`` over positions);
2. one teacher-forced pass of the policy (token log-probs ``log pi_t``, values ``V_t``) and of
   the frozen reference (``log ref_t``); the proxy score of each whole response;
3. per-token rewards ``r_t = -beta * (log pi_t - log ref_t)``, plus the proxy at the last token
   (optionally whitened);
4. GAE with ``gamma = 1`` over the ``L`` tokens (:func:`purejaxppo.core.gae.gae_advantages`, the
   last token a termination);
5. ``epochs x minibatches`` of the clipped PPO loss with value clipping
   (:func:`purejaxppo.core.losses.ppo_loss`), minibatches of whole responses;
6. the KL coefficient's step: Ziegler's proportional controller
   (:func:`purejaxppo.core.losses.proportional_kl_update`) on the batch's mean KL
   ``sum_t (log pi_t - log ref_t)``; with ``kl_horizon = inf`` its gain is 0 and beta is fixed.

The coefficient lives in the scan state; every float setting is a traced value of
:class:`RLHFHParams`, so seeds, betas, targets, and adaptive against fixed beta, vmap in one
program without recompiling.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from purejaxppo.core import losses
from purejaxppo.core.config import check_integer
from purejaxppo.core.distributions import Categorical
from purejaxppo.core.gae import gae_advantages
from purejaxppo.core.stages import minibatch_order, scan_epochs
from purejaxppo.rlhf import model as seqmodel
from purejaxppo.rlhf.reward import RewardModel, combine, member_scores, spread
from purejaxppo.rlhf.task import Task, TaskSpec, gold_reward


class RLHFSettings(NamedTuple):
    """Static settings (shapes and branches)."""

    iterations: int = 150
    batch: int = 256  # responses per iteration
    epochs: int = 4
    minibatches: int = 4
    whiten_rewards: bool = False
    normalize_advantages: bool = True


class RLHFHParams(NamedTuple):
    """Float settings, traced (vmap over any of them)."""

    learning_rate: jax.Array | float = 5e-4
    kl_coef: jax.Array | float = 0.2  # initial beta
    kl_target: jax.Array | float = 1.0  # nats per response
    kl_horizon: jax.Array | float = 1000.0  # samples; the controller's gain is batch / horizon (inf: fixed beta)
    clip_eps: jax.Array | float = 0.2
    vf_clip_eps: jax.Array | float = 0.2
    vf_coef: jax.Array | float = 0.5
    ent_coef: jax.Array | float = 0.0
    gae_lambda: jax.Array | float = 0.95
    gamma: jax.Array | float = 1.0
    ensemble_penalty: jax.Array | float = 0.0  # lambda of mean - lambda * std (a reward-model ensemble's objective)
    ensemble_worst: jax.Array | float = 0.0  # >= 0.5: the members' minimum (reward.combine)


class Frozen(NamedTuple):
    """What PPO reads and never changes."""

    ref_params: Any
    reward: RewardModel  # one model, or an ensemble (each field with a leading member axis [M])
    task: Task


class PPOState(NamedTuple):
    params: Any
    opt_state: Any
    kl: losses.KLControllerState
    key: jax.Array
    iteration: jax.Array  # []


class TokenBatch(NamedTuple):
    """A minibatch in the layout :func:`~purejaxppo.core.losses.ppo_loss` reads: ``obs`` is the
    ``[b, L + 1]`` token sequences, every other field one entry per response token ``[b * L]``."""

    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    advantage: jax.Array
    target: jax.Array


class Iteration(NamedTuple):
    """Per-iteration metrics (each ``[]``; stacked ``[iterations]`` by the scan)."""

    proxy: jax.Array  # mean proxy reward of the sampled responses
    gold: jax.Array  # mean gold reward of the same responses
    kl: jax.Array  # mean sum_t (log pi_t - log ref_t): the sampled KL estimate, nats
    kl_coef: jax.Array  # beta used for this batch's rewards
    reward: jax.Array  # mean total reward (proxy - beta * KL)
    spread: jax.Array  # the reward-model ensemble's mean std over the batch (0 for one model)
    policy_loss: jax.Array
    value_loss: jax.Array
    entropy: jax.Array
    approx_kl: jax.Array  # KL[pi_old || pi] over the epochs' minibatches
    clipfrac: jax.Array
    first_ratio_dev: jax.Array  # max |ratio - 1| on the first minibatch, before any step


def check_settings(settings: RLHFSettings) -> None:
    from purejaxppo.errors import ConfigError

    for name in ("iterations", "batch", "epochs", "minibatches"):
        check_integer(name, getattr(settings, name), 1)
    if settings.batch % settings.minibatches:
        raise ConfigError(f"batch={settings.batch} is not divisible by minibatches={settings.minibatches}")


def _optimizer(hparams: RLHFHParams) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(hparams.learning_rate))


def init(model, sft_params, key: jax.Array, hparams: RLHFHParams) -> PPOState:
    """The policy starts as the reference, with the value head at zero."""
    params = jax.tree_util.tree_map(jnp.array, sft_params)
    head = params["params"]["value_head"]
    params["params"]["value_head"] = jax.tree_util.tree_map(jnp.zeros_like, head)
    opt_state = _optimizer(hparams).init(params)
    return PPOState(params, opt_state, losses.kl_controller_init(hparams.kl_coef), key, jnp.zeros((), jnp.int32))


def whiten(x: jax.Array, shift_mean: bool = True) -> jax.Array:
    """``(x - mean) / std`` over the whole array; without ``shift_mean`` the mean is put back."""
    mean, std = jnp.mean(x), jnp.std(x)
    out = (x - mean) / (std + 1e-8)
    return out if shift_mean else out + mean


def token_rewards(log_probs: jax.Array, ref_log_probs: jax.Array, score: jax.Array, kl_coef: jax.Array) -> jax.Array:
    """``r_t = -beta (log pi_t - log ref_t)``, plus ``score`` at the last token; ``[B, L]``."""
    r = -kl_coef * (log_probs - ref_log_probs)
    return r.at[:, -1].add(score)


def _apply(model):
    def apply(params, tokens):
        logits, values, _ = model.apply(params, tokens)
        k = logits.shape[-1]
        return logits[:, :-1].reshape(-1, k), values[:, :-1].reshape(-1)

    return apply


class Scored(NamedTuple):
    """A batch of sampled responses, scored: every field ``[B, ...]`` (``B`` = ``batch``)."""

    prompts: jax.Array  # [B]
    responses: jax.Array  # [B, L]
    tokens: jax.Array  # [B, L + 1] the model's inputs
    log_probs: jax.Array  # [B, L] log pi_old of each token
    values: jax.Array  # [B, L]
    ref_log_probs: jax.Array  # [B, L]
    score: jax.Array  # [B] the proxy reward model's score (an ensemble's objective)
    spread: jax.Array  # [] the ensemble's disagreement (reward.spread)
    rewards: jax.Array  # [B, L] per-token rewards with the KL penalty
    advantages: jax.Array  # [B, L] GAE
    targets: jax.Array  # [B, L]


def sample_and_score(model, settings: RLHFSettings, spec: TaskSpec, frozen: Frozen, params, beta: jax.Array,
                     hparams: RLHFHParams, k_prompt: jax.Array, k_sample: jax.Array) -> Scored:
    """Sample ``batch`` prompts and a response each, score them, and compute per-token rewards
    (KL penalty ``beta``) and GAE over each response."""
    b, length = settings.batch, spec.length
    prompts = jax.random.randint(k_prompt, (b,), 0, frozen.task.n_prompts)
    responses = seqmodel.sample(model, params, k_sample, prompts)
    tokens = seqmodel.inputs(model, prompts, responses)

    logits, values, _ = model.apply(params, tokens)
    log_probs = Categorical.log_prob(logits[:, :-1], responses)
    values = values[:, :-1]
    ref_log_probs = seqmodel.token_log_probs(model, frozen.ref_params, prompts, responses)
    members = member_scores(model, frozen.reward, prompts, responses)  # [M, B]
    score = combine(members, hparams.ensemble_penalty, hparams.ensemble_worst)
    rewards = token_rewards(log_probs, ref_log_probs, score, beta)
    if settings.whiten_rewards:
        rewards = whiten(rewards, shift_mean=False)

    last = jnp.zeros((length, b), bool).at[-1].set(True)
    next_values = jnp.concatenate([values[:, 1:], jnp.zeros((b, 1))], axis=1)
    adv, targets = gae_advantages(rewards.T, values.T, next_values.T, last, last, hparams.gamma, hparams.gae_lambda)
    adv, targets = adv.T, targets.T
    if settings.normalize_advantages:
        adv = whiten(adv)
    return Scored(prompts, responses, tokens, log_probs, values, ref_log_probs, score, spread(members), rewards, adv,
                  targets)


def fit(model, settings: RLHFSettings, scored: Scored, params, opt_state, hparams: RLHFHParams, beta: jax.Array,
        key: jax.Array):
    """PPO's epochs of shuffled minibatches of whole responses (:func:`purejaxppo.core.stages.scan_epochs`);
    ``(params, opt_state, mean LossInfo, max |ratio - 1| on the first minibatch before any step)``."""
    b = settings.batch
    apply = _apply(model)
    opt = _optimizer(hparams)
    per_seq = (scored.tokens, scored.responses, scored.log_probs, scored.values, scored.advantages, scored.targets)

    def as_batch(idx) -> TokenBatch:
        t, a, lp, v, ad, tg = (x[idx] for x in per_seq)
        return TokenBatch(t, a.reshape(-1), lp.reshape(-1), v.reshape(-1), ad.reshape(-1), tg.reshape(-1))

    first = as_batch(jnp.arange(b // settings.minibatches))
    new_logits, _ = apply(params, first.obs)
    first_ratio_dev = jnp.max(jnp.abs(jnp.exp(Categorical.log_prob(new_logits, first.action) - first.log_prob) - 1.0))

    def loss_fn(params, mb):
        return losses.ppo_loss(apply, Categorical, params, mb, hparams, beta, kl_penalty=False, clip_vloss=True)

    def minibatch(carry, idx):
        params, opt_state = carry
        (_, info), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, as_batch(idx))
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), info

    def epoch(carry, k):
        return jax.lax.scan(minibatch, carry, minibatch_order(jax.random.permutation, k, b, settings.minibatches,
                                                                   b // settings.minibatches))

    (params, opt_state), infos = scan_epochs(epoch, (params, opt_state), key, settings.epochs)
    return params, opt_state, jax.tree_util.tree_map(jnp.mean, infos), first_ratio_dev


def iteration(model, settings: RLHFSettings, spec: TaskSpec, frozen: Frozen, state: PPOState, hparams: RLHFHParams):
    """One PPO iteration; returns ``(state, Iteration)``. Pure."""
    key, k_prompt, k_sample, k_shuffle = jax.random.split(state.key, 4)
    beta = state.kl.coef
    scored = sample_and_score(model, settings, spec, frozen, state.params, beta, hparams, k_prompt, k_sample)
    params, opt_state, info, first_ratio_dev = fit(model, settings, scored, state.params, state.opt_state, hparams,
                                                   beta, k_shuffle)
    seq_kl = jnp.mean(jnp.sum(scored.log_probs - scored.ref_log_probs, axis=1))
    kl_state = losses.proportional_kl_update(state.kl, seq_kl, hparams.kl_target, settings.batch, hparams.kl_horizon)
    metrics = Iteration(
        proxy=jnp.mean(scored.score),
        gold=jnp.mean(gold_reward(frozen.task, spec, scored.prompts, scored.responses)),
        kl=seq_kl,
        kl_coef=beta,
        reward=jnp.mean(jnp.sum(scored.rewards, axis=1)),
        spread=scored.spread,
        policy_loss=info.policy_loss,
        value_loss=info.value_loss,
        entropy=info.entropy,
        approx_kl=info.approx_kl,
        clipfrac=info.clipfrac,
        first_ratio_dev=first_ratio_dev,
    )
    return PPOState(params, opt_state, kl_state, key, state.iteration + 1), metrics


def run(model, settings: RLHFSettings, spec: TaskSpec, frozen: Frozen, state: PPOState, hparams: RLHFHParams, n: int):
    """``n`` iterations in one ``lax.scan``: ``(state, Iteration [n])``. Pure; jit it with
    ``n`` static, and call it again on its output state to continue (chunked training)."""

    def body(s, _):
        return iteration(model, settings, spec, frozen, s, hparams)

    return jax.lax.scan(body, state, None, length=n)


def make_train(model, settings: RLHFSettings, spec: TaskSpec, frozen: Frozen, sft_params):
    """``train(key, hparams) -> (PPOState, Iteration [iterations])``: the whole run as one pure
    function, for ``jax.jit`` and ``jax.vmap`` over keys and any float setting."""
    check_settings(settings)

    def train(key: jax.Array, hparams: RLHFHParams):
        state = init(model, sft_params, key, hparams)
        return run(model, settings, spec, frozen, state, hparams, settings.iterations)

    return train
