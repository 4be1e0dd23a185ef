"""Exact quantities by enumeration of every response.

Distributions over responses are held as log-probabilities ``[P, N]``: one row per prompt,
one column per response of :func:`purejaxppo.rlhf.task.all_responses`. Prompts are uniform,
so every expectation is the mean over prompts of the per-prompt sum over responses.

* :func:`kl` is ``E_x KL(pi(.|x) || ref(.|x))`` in nats per response;
* :func:`optimum_log_probs` is the KL-regularised optimum
  ``pi*_beta(y|x) ∝ ref(y|x) exp(r(x, y) / beta)``, the maximiser of ``E[r] - beta KL``;
* :func:`best_of_n_log_probs` is the distribution of the response with the highest proxy
  among ``n`` independent draws from ``ref``: sorting responses by proxy with reference
  probabilities ``q``, ``P(best = y_(i)) = F_i^n - F_{i-1}^n`` with ``F`` the cumulative ``q``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from purejaxppo.rlhf import model as seqmodel
from purejaxppo.rlhf.task import all_responses


class Enumeration(NamedTuple):
    """Every ``(prompt, response)`` and the fixed functions of them."""

    prompts: jax.Array  # [P, N]
    responses: jax.Array  # [P, N, L]
    ref_log_probs: jax.Array  # [P, N] log ref(y | x)
    proxy: jax.Array  # [P, N] normalised reward-model score
    gold: jax.Array  # [P, N] gold reward (G's standard deviations)


def grid(n_prompts: int, n_tokens: int, length: int) -> tuple[jax.Array, jax.Array]:
    """``(prompts [P, N], responses [P, N, L])`` for every pair."""
    ys = jnp.asarray(all_responses(n_tokens, length))
    prompts = jnp.broadcast_to(jnp.arange(n_prompts, dtype=jnp.int32)[:, None], (n_prompts, ys.shape[0]))
    return prompts, jnp.broadcast_to(ys, (n_prompts, *ys.shape))


def _chunked(fn, prompts: jax.Array, responses: jax.Array, chunk: int) -> jax.Array:
    """``fn(prompts [C], responses [C, L]) -> [C]`` over all pairs, ``chunk`` at a time."""
    shape = prompts.shape
    p = prompts.reshape(-1)
    r = responses.reshape(-1, responses.shape[-1])
    pad = (-p.shape[0]) % chunk
    p = jnp.pad(p, (0, pad))
    r = jnp.pad(r, ((0, pad), (0, 0)))
    out = jax.lax.map(lambda a: fn(*a), (p.reshape(-1, chunk), r.reshape(-1, chunk, r.shape[-1])))
    return out.reshape(-1)[: np.prod(shape)].reshape(shape)


def all_log_probs(model, params, prompts: jax.Array, responses: jax.Array, chunk: int = 4096) -> jax.Array:
    """``log pi(y | x)`` for every pair, ``[P, N]``."""
    return _chunked(lambda p, r: seqmodel.sequence_log_probs(model, params, p, r), prompts, responses, chunk)


def grid_log_probs(model, params, n_prompts: int, chunk: int = 4096) -> jax.Array:
    """``log pi(y | x)`` for every pair in :func:`grid` order, ``[P, K ** L]``, from one causal pass
    per *prefix* ``y_1 .. y_{L-1}``: its last position gives the next-token distribution of
    all ``K`` completions at once, so this costs ``K`` times less than one pass per response."""
    k, length = model.n_tokens, model.length
    prompts, prefixes = grid(n_prompts, k, length - 1)  # [P, M], [P, M, L-1]

    def per_prefix(p, y):  # [C], [C, L-1] -> [C * K]
        logits, _, _ = model.apply(params, seqmodel.inputs(model, p, y))  # [C, L, K]
        logp = jax.nn.log_softmax(logits, axis=-1)
        head = jnp.sum(jnp.take_along_axis(logp[:, :-1], y[..., None], axis=-1)[..., 0], axis=-1)  # [C]
        return (head[:, None] + logp[:, -1]).reshape(-1)

    p = prompts.reshape(-1)
    y = prefixes.reshape(-1, length - 1)
    pad = (-p.shape[0]) % chunk
    p, y = jnp.pad(p, (0, pad)), jnp.pad(y, ((0, pad), (0, 0)))
    out = jax.lax.map(lambda a: per_prefix(*a), (p.reshape(-1, chunk), y.reshape(-1, chunk, length - 1)))
    return out.reshape(-1)[: prompts.size * k].reshape(n_prompts, -1)


def all_scores(model, params, prompts: jax.Array, responses: jax.Array, chunk: int = 4096) -> jax.Array:
    """The score head for every pair, ``[P, N]``."""
    return _chunked(lambda p, r: seqmodel.scores(model, params, p, r), prompts, responses, chunk)


def expectation(log_probs: jax.Array, values: jax.Array) -> jax.Array:
    """``E_x E_{y ~ pi(.|x)} [values]`` with uniform prompts (responses of probability 0 add 0)."""
    p = jnp.exp(log_probs)
    return jnp.mean(jnp.sum(jnp.where(p > 0, p * values, 0.0), axis=-1))


def kl(log_probs: jax.Array, ref_log_probs: jax.Array) -> jax.Array:
    """``E_x KL(pi(.|x) || ref(.|x))``, nats."""
    return expectation(log_probs, log_probs - ref_log_probs)


def win_rate(log_probs: jax.Array, ref_log_probs: jax.Array, gold: jax.Array) -> jax.Array:
    """``P(r*(y) > r*(y')) + P(r*(y) = r*(y')) / 2`` with ``y ~ pi``, ``y' ~ ref`` independent,
    same uniform prompt: exact, by sorting each prompt's responses by gold."""

    def one(lp, lq, g):
        order = jnp.argsort(g)
        g_s, p_s, q_s = g[order], jnp.exp(lp[order]), jnp.exp(lq[order])
        # Reference mass strictly below and equal to each gold value.
        below = jnp.searchsorted(g_s, g_s, side="left")
        upto = jnp.searchsorted(g_s, g_s, side="right")
        cq = jnp.concatenate([jnp.zeros(1), jnp.cumsum(q_s)])
        less, equal = cq[below], cq[upto] - cq[below]
        return jnp.sum(p_s * (less + 0.5 * equal))

    return jnp.mean(jax.vmap(one)(log_probs, ref_log_probs, gold))


def optimum_log_probs(ref_log_probs: jax.Array, proxy: jax.Array, beta: jax.Array | float) -> jax.Array:
    """``log pi*_beta`` with ``pi*_beta(y|x) ∝ ref(y|x) exp(proxy(x, y) / beta)``."""
    logits = ref_log_probs + proxy / beta
    return logits - jax.nn.logsumexp(logits, axis=-1, keepdims=True)


def best_of_n_log_probs(ref_log_probs: jax.Array, proxy: jax.Array, n: jax.Array | int) -> jax.Array:
    """``log`` of the best-of-``n`` distribution under the proxy (ties broken by response order)."""

    def one(lq, s):
        order = jnp.argsort(s, stable=True)
        cdf = jnp.clip(jnp.cumsum(jnp.exp(lq[order])), 0.0, 1.0)
        prev = jnp.concatenate([jnp.zeros(1), cdf[:-1]])
        p_sorted = cdf**n - prev**n
        p = jnp.zeros_like(p_sorted).at[order].set(jnp.maximum(p_sorted, 0.0))
        return jnp.where(p > 0, jnp.log(jnp.where(p > 0, p, 1.0)), -jnp.inf)

    return jax.vmap(one)(ref_log_probs, proxy)


class Point(NamedTuple):
    """Exact figures of one policy."""

    kl: jax.Array
    proxy: jax.Array
    gold: jax.Array
    win_rate: jax.Array


def evaluate(log_probs: jax.Array, enum: Enumeration) -> Point:
    """KL to the reference, proxy and gold means, and gold win rate against the reference."""
    return Point(
        kl(log_probs, enum.ref_log_probs),
        expectation(log_probs, enum.proxy),
        expectation(log_probs, enum.gold),
        win_rate(log_probs, enum.ref_log_probs, enum.gold),
    )


def frontier(enum: Enumeration, betas: jax.Array) -> Point:
    """The exact optimum's figures at each beta (vmapped), each ``[len(betas)]``."""
    return jax.vmap(lambda b: evaluate(optimum_log_probs(enum.ref_log_probs, enum.proxy, b), enum))(betas)


def proxy_at_kl(front: Point, kl_value: float) -> float:
    """The optimum's proxy at a given KL, interpolated on the frontier (monotone in KL)."""
    order = np.argsort(np.asarray(front.kl))
    return float(np.interp(kl_value, np.asarray(front.kl)[order], np.asarray(front.proxy)[order]))


def best_of_n_kl_bound(n: np.ndarray) -> np.ndarray:
    """``log n - (n - 1) / n``, the upper bound on best-of-n's KL to the reference."""
    n = np.asarray(n, np.float64)
    return np.log(n) - (n - 1) / n
