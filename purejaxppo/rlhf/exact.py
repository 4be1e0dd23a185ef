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

The model gives per-response log-probabilities in float32 (JAX); every sum over the response
space (KL, means, win rate, the optimum, best-of-n) is then done in NumPy float64, each row
renormalised first, so the reference's KL to itself and best-of-1's are 0 to 1e-12, not the
1e-4 that float32 sums over 46,656 responses leave.
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


def normalised(log_probs) -> np.ndarray:
    """``log_probs [P, N]`` in float64, each row renormalised: ``lp - logsumexp(lp)`` (a model's
    float32 log-probabilities sum to 1 only to about 1e-6, which would show as KL)."""
    lp = np.asarray(log_probs, np.float64)
    top = np.max(lp, axis=-1, keepdims=True)
    return lp - (top + np.log(np.sum(np.exp(lp - top), axis=-1, keepdims=True)))


def expectation(log_probs, values) -> float:
    """``E_x E_{y ~ pi(.|x)} [values]`` with uniform prompts, summed in float64 (responses of
    probability 0 add 0)."""
    p = np.exp(normalised(log_probs))
    v = np.asarray(values, np.float64)
    return float(np.mean(np.sum(np.where(p > 0, p * np.where(p > 0, v, 0.0), 0.0), axis=-1)))


def kl(log_probs, ref_log_probs) -> float:
    """``E_x KL(pi(.|x) || ref(.|x)) = E_x sum_y pi(y|x) (log pi(y|x) - log ref(y|x))``, nats, in float64."""
    lp, lq = normalised(log_probs), normalised(ref_log_probs)
    return expectation(lp, np.where(np.isfinite(lp), lp - lq, 0.0))


def win_rate(log_probs, ref_log_probs, gold) -> float:
    """``P(r*(y) > r*(y')) + P(r*(y) = r*(y')) / 2`` with ``y ~ pi``, ``y' ~ ref`` independent,
    same uniform prompt: exact, by sorting each prompt's responses by gold (float64)."""
    p_all, q_all = np.exp(normalised(log_probs)), np.exp(normalised(ref_log_probs))
    g_all = np.asarray(gold, np.float64)
    total = 0.0
    for p, q, g in zip(p_all, q_all, g_all):
        order = np.argsort(g, kind="stable")
        g_s, p_s, q_s = g[order], p[order], q[order]
        # Reference mass strictly below and equal to each gold value.
        below = np.searchsorted(g_s, g_s, side="left")
        upto = np.searchsorted(g_s, g_s, side="right")
        cq = np.concatenate([[0.0], np.cumsum(q_s)])
        total += np.sum(p_s * (cq[below] + 0.5 * (cq[upto] - cq[below])))
    return float(total / len(g_all))


def optimum_log_probs(ref_log_probs, proxy, beta: float) -> np.ndarray:
    """``log pi*_beta`` with ``pi*_beta(y|x) ∝ ref(y|x) exp(proxy(x, y) / beta)``, float64 ``[P, N]``."""
    return normalised(normalised(ref_log_probs) + np.asarray(proxy, np.float64) / float(beta))


def best_of_n_log_probs(ref_log_probs, proxy, n: float) -> np.ndarray:
    """``log`` of the best-of-``n`` distribution under the proxy (ties broken by response order),
    float64 ``[P, N]``, in log space. With responses sorted by proxy, ``F_i`` the reference's
    cumulative probability and ``S_i = 1 - F_i`` summed from the top (exact near ``F = 1``):

        P(best = y_(i)) = F_i^n - F_(i-1)^n = F_i^n (1 - exp(n (log F_(i-1) - log F_i))),
        log F_i = log1p(-S_i).
    """
    q_all, s_all = np.exp(normalised(ref_log_probs)), np.asarray(proxy, np.float64)
    out = np.empty_like(q_all)
    for row, (q, s) in enumerate(zip(q_all, s_all)):
        order = np.argsort(s, kind="stable")
        tail = np.concatenate([np.cumsum(q[order][::-1])[::-1][1:], [0.0]])  # S_i: mass above i
        with np.errstate(divide="ignore"):
            log_f = np.log1p(-np.minimum(tail, 1.0))
            prev = np.concatenate([[-np.inf], log_f[:-1]])
            log_p = n * log_f + np.log(-np.expm1(n * (prev - log_f)))
        out[row, order] = np.where(q[order] > 0, log_p, -np.inf)
    return out


class Point(NamedTuple):
    """Exact figures of one policy (float64)."""

    kl: float
    proxy: float
    gold: float
    win_rate: float


def evaluate(log_probs, enum: Enumeration) -> Point:
    """KL to the reference, proxy and gold means, and gold win rate against the reference, each
    summed over every response in float64."""
    return Point(
        kl(log_probs, enum.ref_log_probs),
        expectation(log_probs, enum.proxy),
        expectation(log_probs, enum.gold),
        win_rate(log_probs, enum.ref_log_probs, enum.gold),
    )


def evaluate_many(log_probs, enum: Enumeration) -> Point:
    """:func:`evaluate` of policies stacked on a leading axis ``[S, P, N]``: each field ``[S]``."""
    pts = [evaluate(lp, enum) for lp in np.asarray(log_probs)]
    return Point(*(np.array([getattr(p, f) for p in pts]) for f in Point._fields))


def frontier(enum: Enumeration, betas) -> Point:
    """The exact optimum's figures at each beta, each ``[len(betas)]``."""
    return evaluate_many([optimum_log_probs(enum.ref_log_probs, enum.proxy, b) for b in np.asarray(betas)], enum)


def proxy_at_kl(front: Point, kl_value: float) -> float:
    """The optimum's proxy at a given KL, interpolated on the frontier (monotone in KL)."""
    order = np.argsort(np.asarray(front.kl))
    return float(np.interp(kl_value, np.asarray(front.kl)[order], np.asarray(front.proxy)[order]))


def best_of_n_kl_bound(n: np.ndarray) -> np.ndarray:
    """``log n - (n - 1) / n``, the upper bound on best-of-n's KL to the reference."""
    n = np.asarray(n, np.float64)
    return np.log(n) - (n - 1) / n
