"""GRPO and RLOO: ``k`` responses per prompt, a baseline from the group, no critic.

One iteration, all inside the compiled program:

1. sample ``prompts`` prompts and ``k`` responses to each from the policy (``[prompts * k]``, a
   group's responses adjacent);
2. one teacher-forced pass of the policy and of the frozen reference (token log-probabilities);
   the proxy of each response (an ensemble's objective, :func:`purejaxppo.rlhf.reward.combine`);
3. a reward per response and an advantage per response, from its group ``[prompts, k]``:

   * **GRPO** (Shao et al. 2024, "DeepSeekMath", arXiv:2402.03300, eq. 3 with outcome
     supervision): ``r_i = proxy_i``, ``A_i = (r_i - mean_j r_j) / std_j r_j`` (sample standard
     deviation, ``ddof = 1``), the KL to the reference in the loss through the k3 estimator
     ``exp(ref_t - logp_t) - (ref_t - logp_t) - 1`` per token, weighted by beta;
   * **RLOO** (Ahmadian et al. 2024, "Back to Basics", arXiv:2402.14740, eq. 6):
     ``r_i = proxy_i - beta sum_t (logp_t - ref_t)``, ``A_i = r_i - (sum_{j != i} r_j) / (k - 1)``;

4. ``epochs x minibatches`` of the clipped surrogate on whole responses, every token of a
   response with its response's advantage, averaged over tokens (with one epoch of one
   minibatch the ratio is 1 and the gradient is REINFORCE's with the leave-one-out baseline);
5. beta's step: Ziegler's proportional controller on the batch's mean ``sum_t (logp_t - ref_t)``
   (infinite horizon: fixed beta), as in :mod:`purejaxppo.rlhf.ppo`.

Every float setting is a traced value of :class:`GroupHParams`, so seeds, betas and fixed against
adaptive beta vmap in one program. The algorithm is a :class:`GroupAlgorithm` bundle chosen
where the trainer is made (:data:`GRPO`, :data:`RLOO`); the iteration names neither.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from purejaxppo.core import losses
from purejaxppo.core.config import check_integer
from purejaxppo.core.distributions import Categorical
from purejaxppo.core.stages import minibatch_order, scan_epochs
from purejaxppo.rlhf import model as seqmodel
from purejaxppo.rlhf.ppo import Frozen
from purejaxppo.rlhf.reward import combine, member_scores, spread
from purejaxppo.rlhf.task import TaskSpec, gold_reward


# ---- the pieces, each checkable against its paper ---------------------------------------------
def group_advantages(rewards: jax.Array) -> jax.Array:
    """GRPO: ``A_i = (r_i - mean(r)) / (std(r) + 1e-8)`` within each group, ``[G, k] -> [G, k]``
    (``std`` with ``ddof = 1``; a group of equal rewards has advantages 0)."""
    assert rewards.ndim == 2 and rewards.shape[1] >= 2
    mean = jnp.mean(rewards, axis=1, keepdims=True)
    std = jnp.std(rewards, axis=1, keepdims=True, ddof=1)
    return (rewards - mean) / (std + 1e-8)


def leave_one_out_baseline(rewards: jax.Array) -> jax.Array:
    """RLOO: ``b_i = (sum_j r_j - r_i) / (k - 1)``, the mean of the others, ``[G, k] -> [G, k]``."""
    assert rewards.ndim == 2 and rewards.shape[1] >= 2
    k = rewards.shape[1]
    return (jnp.sum(rewards, axis=1, keepdims=True) - rewards) / (k - 1)


def leave_one_out_advantages(rewards: jax.Array) -> jax.Array:
    """RLOO: ``A_i = r_i - b_i = k / (k - 1) (r_i - mean(r))``, ``[G, k] -> [G, k]``."""
    return rewards - leave_one_out_baseline(rewards)


def k3_kl(log_probs: jax.Array, ref_log_probs: jax.Array) -> jax.Array:
    """Schulman's k3 estimator of ``KL(pi || ref)`` per token, ``exp(d) - d - 1`` with
    ``d = log ref - log pi``: non-negative, and unbiased under ``y_t ~ pi``
    (``E_pi[ref/pi] = 1``); summed over a response's tokens, unbiased for the sequence KL."""
    d = ref_log_probs - log_probs
    return jnp.exp(d) - d - 1.0


class GroupAlgorithm(NamedTuple):
    """What tells GRPO from RLOO: how a group's rewards become advantages, and where the KL goes."""

    advantages: Callable[[jax.Array], jax.Array]  # rewards [G, k] -> advantages [G, k]
    kl_in_loss: bool  # True: beta * k3 in the loss (GRPO); False: -beta * KL in the reward (RLOO)


GRPO = GroupAlgorithm(group_advantages, kl_in_loss=True)
RLOO = GroupAlgorithm(leave_one_out_advantages, kl_in_loss=False)
ALGORITHMS = {"grpo": GRPO, "rloo": RLOO}


# ---- settings and state -------------------------------------------------------------------------
class GroupSettings(NamedTuple):
    """Static settings (shapes)."""

    iterations: int = 150
    prompts: int = 32  # prompts per iteration
    group: int = 8  # k responses per prompt
    epochs: int = 4
    minibatches: int = 4

    @property
    def batch(self) -> int:
        return self.prompts * self.group


class GroupHParams(NamedTuple):
    """Float settings, traced (vmap over any of them)."""

    learning_rate: jax.Array | float = 5e-4
    kl_coef: jax.Array | float = 0.2  # initial beta
    kl_target: jax.Array | float = 1.0  # nats per response
    kl_horizon: jax.Array | float = 1000.0  # inf: fixed beta
    clip_eps: jax.Array | float = 0.2
    ensemble_penalty: jax.Array | float = 0.0  # lambda of mean - lambda * std (an ensemble's objective)
    ensemble_worst: jax.Array | float = 0.0  # >= 0.5: the members' minimum


class GroupState(NamedTuple):
    params: Any
    opt_state: Any
    kl: losses.KLControllerState
    key: jax.Array
    iteration: jax.Array  # []


class GroupBatch(NamedTuple):
    """A batch of groups, every field ``[B, ...]`` with ``B = prompts * k``, a group adjacent."""

    tokens: jax.Array  # [B, L + 1]
    responses: jax.Array  # [B, L]
    log_probs: jax.Array  # [B, L] log pi_old
    ref_log_probs: jax.Array  # [B, L]
    advantages: jax.Array  # [B]


class GroupIteration(NamedTuple):
    """Per-iteration metrics (each ``[]``; stacked ``[iterations]`` by the scan)."""

    proxy: jax.Array  # mean objective of the sampled responses
    gold: jax.Array
    kl: jax.Array  # mean sum_t (log pi_t - log ref_t), nats
    kl_k3: jax.Array  # mean sum_t k3_t: the loss's estimate of the same KL
    kl_coef: jax.Array
    reward: jax.Array  # mean reward that enters the advantages
    spread: jax.Array  # the reward-model ensemble's mean std over the batch (0 for one model)
    policy_loss: jax.Array
    approx_kl: jax.Array  # KL[pi_old || pi] over the epochs' minibatches
    clipfrac: jax.Array
    first_ratio_dev: jax.Array  # max |ratio - 1| on the first minibatch, before any step


def check_settings(settings: GroupSettings) -> None:
    from purejaxppo.errors import ConfigError

    for name in ("iterations", "prompts", "epochs", "minibatches"):
        check_integer(name, getattr(settings, name), 1)
    check_integer("group", settings.group, 2)
    if settings.batch % settings.minibatches:
        raise ConfigError(f"prompts * group = {settings.batch} is not divisible by minibatches={settings.minibatches}")


def _optimizer(hparams: GroupHParams) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(hparams.learning_rate))


def init(sft_params, key: jax.Array, hparams: GroupHParams) -> GroupState:
    """The policy starts as the reference (no value head is read)."""
    params = jax.tree_util.tree_map(jnp.array, sft_params)
    return GroupState(params, _optimizer(hparams).init(params), losses.kl_controller_init(hparams.kl_coef), key,
                      jnp.zeros((), jnp.int32))


# ---- one iteration --------------------------------------------------------------------------------
class Sampled(NamedTuple):
    """The sampled groups with their scores (``B = prompts * k``)."""

    batch: GroupBatch
    prompts: jax.Array  # [B]
    score: jax.Array  # [B] the objective
    spread: jax.Array  # [] the ensemble's disagreement
    rewards: jax.Array  # [B] what enters the advantages
    seq_kl: jax.Array  # [B] sum_t (log pi_t - log ref_t)


def sample_groups(model, algo: GroupAlgorithm, settings: GroupSettings, frozen: Frozen, params, beta: jax.Array,
                  hparams: GroupHParams, key: jax.Array) -> Sampled:
    """``prompts`` prompts, ``k`` responses each, scored; rewards and group advantages."""
    k_prompt, k_sample = jax.random.split(key)
    g, k = settings.prompts, settings.group
    prompts = jnp.repeat(jax.random.randint(k_prompt, (g,), 0, frozen.task.n_prompts), k)  # [B]
    responses = seqmodel.sample(model, params, k_sample, prompts)
    log_probs = seqmodel.token_log_probs(model, params, prompts, responses)
    ref_log_probs = seqmodel.token_log_probs(model, frozen.ref_params, prompts, responses)
    members = member_scores(model, frozen.reward, prompts, responses)  # [M, B]
    score = combine(members, hparams.ensemble_penalty, hparams.ensemble_worst)
    seq_kl = jnp.sum(log_probs - ref_log_probs, axis=1)
    rewards = score if algo.kl_in_loss else score - beta * seq_kl
    adv = algo.advantages(rewards.reshape(g, k)).reshape(-1)
    batch = GroupBatch(seqmodel.inputs(model, prompts, responses), responses, log_probs, ref_log_probs, adv)
    return Sampled(batch, prompts, score, spread(members), rewards, seq_kl)


def surrogate_loss(model, params, mb: GroupBatch, clip_eps: jax.Array, kl_loss_coef: jax.Array):
    """``-mean_{i,t} min(rho A_i, clip(rho, 1 +- eps) A_i) + kl_loss_coef * mean_{i,t} k3_t``
    over a minibatch ``[b, L]``, ``rho = pi(y_t) / pi_old(y_t)``; ``(loss, (approx_kl, clipfrac))``."""
    logits, _, _ = model.apply(params, mb.tokens)
    log_probs = Categorical.log_prob(logits[:, :-1], mb.responses)  # [b, L]
    log_ratio = log_probs - mb.log_probs
    ratio = jnp.exp(log_ratio)
    adv = mb.advantages[:, None]
    surr = jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - clip_eps, 1 + clip_eps) * adv)
    loss = -jnp.mean(surr) + kl_loss_coef * jnp.mean(k3_kl(log_probs, mb.ref_log_probs))
    approx_kl = jnp.mean((ratio - 1) - log_ratio)
    clipfrac = jnp.mean(jnp.abs(ratio - 1) > clip_eps)
    return loss, (approx_kl, clipfrac)


def fit(model, settings: GroupSettings, batch: GroupBatch, params, opt_state, hparams: GroupHParams,
        kl_loss_coef: jax.Array, key: jax.Array):
    """Epochs of shuffled minibatches of whole responses; ``(params, opt_state, (loss, approx_kl,
    clipfrac) means, max |ratio - 1| on the first minibatch before any step)``."""
    b, mbs = settings.batch, settings.batch // settings.minibatches
    opt = _optimizer(hparams)

    def take(idx) -> GroupBatch:
        return jax.tree_util.tree_map(lambda x: x[idx], batch)

    first = take(jnp.arange(mbs))
    logits, _, _ = model.apply(params, first.tokens)
    first_dev = jnp.max(jnp.abs(jnp.exp(Categorical.log_prob(logits[:, :-1], first.responses) - first.log_probs) - 1))

    def minibatch(carry, idx):
        params, opt_state = carry
        loss_fn = lambda p: surrogate_loss(model, p, take(idx), hparams.clip_eps, kl_loss_coef)
        (loss, (akl, cf)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), (loss, akl, cf)

    def epoch(carry, k):
        return jax.lax.scan(minibatch, carry, minibatch_order(jax.random.permutation, k, b, settings.minibatches, mbs))

    (params, opt_state), infos = scan_epochs(epoch, (params, opt_state), key, settings.epochs)
    return params, opt_state, tuple(jnp.mean(x) for x in infos), first_dev


def iteration(model, algo: GroupAlgorithm, settings: GroupSettings, spec: TaskSpec, frozen: Frozen,
              state: GroupState, hparams: GroupHParams):
    """One GRPO or RLOO iteration; returns ``(state, GroupIteration)``. Pure."""
    key, k_sample, k_shuffle = jax.random.split(state.key, 3)
    beta = state.kl.coef
    s = sample_groups(model, algo, settings, frozen, state.params, beta, hparams, k_sample)
    kl_loss_coef = beta if algo.kl_in_loss else jnp.zeros_like(beta)
    params, opt_state, (loss, akl, cf), first_dev = fit(model, settings, s.batch, state.params, state.opt_state,
                                                        hparams, kl_loss_coef, k_shuffle)
    seq_kl = jnp.mean(s.seq_kl)
    kl_state = losses.proportional_kl_update(state.kl, seq_kl, hparams.kl_target, settings.batch, hparams.kl_horizon)
    metrics = GroupIteration(
        proxy=jnp.mean(s.score),
        gold=jnp.mean(gold_reward(frozen.task, spec, s.prompts, s.batch.responses)),
        kl=seq_kl,
        kl_k3=jnp.mean(jnp.sum(k3_kl(s.batch.log_probs, s.batch.ref_log_probs), axis=1)),
        kl_coef=beta,
        reward=jnp.mean(s.rewards),
        spread=s.spread,
        policy_loss=loss,
        approx_kl=akl,
        clipfrac=cf,
        first_ratio_dev=first_dev,
    )
    return GroupState(params, opt_state, kl_state, key, state.iteration + 1), metrics


def run(model, algo: GroupAlgorithm, settings: GroupSettings, spec: TaskSpec, frozen: Frozen, state: GroupState,
        hparams: GroupHParams, n: int):
    """``n`` iterations in one ``lax.scan``: ``(state, GroupIteration [n])``. Pure; call it again on
    its output state to continue (chunked training)."""

    def body(st, _):
        return iteration(model, algo, settings, spec, frozen, st, hparams)

    return jax.lax.scan(body, state, None, length=n)


def make_train(model, algo: GroupAlgorithm, settings: GroupSettings, spec: TaskSpec, frozen: Frozen, sft_params):
    """``train(key, hparams) -> (GroupState, GroupIteration [iterations])``: the whole run as one pure
    function, for ``jax.jit`` and ``jax.vmap`` over keys and any float setting."""
    check_settings(settings)

    def train(key: jax.Array, hparams: GroupHParams):
        return run(model, algo, settings, spec, frozen, init(sft_params, key, hparams), hparams, settings.iterations)

    return train
