"""A synthetic preference task whose truth is known exactly.

The language has ``n_tokens`` content tokens ``0 .. K-1``; a prompt is one of ``n_prompts``
values, written as the token ``K + x``. A response is ``length`` content tokens.

* **Generator G.** For each prompt, a Markov chain: a first-token distribution ``p0[x]`` and a
  transition matrix ``P[x]``, their rows drawn from a Dirichlet with a fixed seed. Its entropy
  per token is known exactly (:func:`entropy_per_token`).
* **Gold reward** ``r*(x, y) = sum_t w[x, y_t] - c * max(0, maxcount(y) - k)``: a per-token
  linear score plus a penalty for responses that repeat one symbol more than ``k`` times,
  standardised to mean 0 and standard deviation 1 under G (exactly, by enumeration), so that
  gold figures are in G's standard deviations. The linear part alone is highest on a response
  that repeats its best token, which the penalty makes one of the worst: a reward model learnt
  from G's samples, where such responses are rare, extrapolates wrongly into that region.
* **Preferences.** Pairs of responses to the same prompt, labelled by a Bradley-Terry draw
  ``P(y1 > y2) = sigmoid((r*1 - r*2) / tau)``, ``tau`` set so that the expected fraction of
  labels that disagree with the gold order is ``label_noise``.

The response space has ``K ** length`` members per prompt, so every expectation over it can be
computed exactly (:mod:`purejaxppo.rlhf.exact`).
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class TaskSpec(NamedTuple):
    """The settings that define a task (all static)."""

    seed: int = 0
    n_tokens: int = 6  # K content tokens
    n_prompts: int = 4
    length: int = 5  # L response tokens
    concentration: float = 0.8  # Dirichlet concentration of G's rows (lower: more peaked)
    repeat_limit: int | None = None  # k; None: length - 2
    penalty: float = 4.0  # c, per repetition over k, in units of the linear score's scale
    label_noise: float = 0.22  # fraction of preference labels against the gold order


class Task(NamedTuple):
    """A task's arrays (a pytree; ``spec`` holds the static settings)."""

    p0: jax.Array  # [P, K] G's first-token distribution per prompt
    trans: jax.Array  # [P, K, K] G's transitions per prompt, rows sum to 1
    weights: jax.Array  # [P, K] per-token linear score
    gold_shift: jax.Array  # [] raw gold mean under G
    gold_scale: jax.Array  # [] raw gold std under G
    tau: jax.Array  # [] Bradley-Terry temperature of the labels, in gold std units

    @property
    def n_prompts(self) -> int:
        return self.p0.shape[0]

    @property
    def n_tokens(self) -> int:
        return self.p0.shape[1]


def check_spec(spec: TaskSpec) -> None:
    """One-line errors for settings no task can have."""
    from purejaxppo.errors import ConfigError

    if not 2 <= spec.n_tokens <= 16:
        raise ConfigError(f"n_tokens={spec.n_tokens} is out of range; use 2 to 16 content tokens")
    if not 1 <= spec.n_prompts <= 64:
        raise ConfigError(f"n_prompts={spec.n_prompts} is out of range; use 1 to 64 prompts")
    if not 2 <= spec.length <= 8:
        raise ConfigError(f"length={spec.length} is out of range; use 2 to 8 response tokens")
    if spec.n_tokens**spec.length * spec.n_prompts > 2_000_000:
        raise ConfigError(
            f"n_tokens**length * n_prompts = {spec.n_tokens**spec.length * spec.n_prompts} responses is too many to "
            "enumerate; keep it at most 2,000,000"
        )
    if not 0.0 < spec.label_noise < 0.5:
        raise ConfigError(f"label_noise={spec.label_noise} must lie strictly between 0 and 0.5")
    if spec.concentration <= 0:
        raise ConfigError(f"concentration={spec.concentration} must be positive")


def repeat_limit(spec: TaskSpec) -> int:
    return spec.length - 2 if spec.repeat_limit is None else spec.repeat_limit


def all_responses(n_tokens: int, length: int) -> np.ndarray:
    """Every response, ``[K ** L, L]`` int32, in lexicographic order."""
    return np.array(list(itertools.product(range(n_tokens), repeat=length)), dtype=np.int32)


def max_count(responses: jax.Array, n_tokens: int) -> jax.Array:
    """Occurrences of the most frequent token of each response ``[..., L] -> [...]``."""
    counts = jnp.sum(responses[..., None] == jnp.arange(n_tokens), axis=-2)
    return jnp.max(counts, axis=-1)


def raw_gold(weights: jax.Array, spec: TaskSpec, prompts: jax.Array, responses: jax.Array) -> jax.Array:
    """Unstandardised gold reward of ``responses [..., L]`` to ``prompts [...]``."""
    linear = jnp.sum(weights[prompts[..., None], responses], axis=-1)
    excess = jnp.maximum(max_count(responses, spec.n_tokens) - repeat_limit(spec), 0)
    return linear - spec.penalty * excess


def gold_reward(task: Task, spec: TaskSpec, prompts: jax.Array, responses: jax.Array) -> jax.Array:
    """The gold reward r*(x, y) in G's standard deviations (mean 0, std 1 under G)."""
    return (raw_gold(task.weights, spec, prompts, responses) - task.gold_shift) / task.gold_scale


def sequence_log_probs_g(p0: jax.Array, trans: jax.Array, prompts: jax.Array, responses: jax.Array) -> jax.Array:
    """log G(y | x) of ``responses [..., L]``."""
    first = jnp.log(p0[prompts, responses[..., 0]])
    later = jnp.log(trans[prompts[..., None], responses[..., :-1], responses[..., 1:]])
    return first + jnp.sum(later, axis=-1)


def entropy_per_token(task: Task, spec: TaskSpec) -> float:
    """G's exact entropy per response token, averaged over uniform prompts: H(Y | X) / L.

    Computed from the chain's marginals (no enumeration): H(Y|x) = H(p0) + sum over t of
    E[H(P[y_{t-1}])] under the marginal of y_{t-1}.
    """
    p0 = np.asarray(task.p0, np.float64)
    trans = np.asarray(task.trans, np.float64)
    row_h = -np.sum(trans * np.log(trans), axis=-1)  # [P, K]
    total = 0.0
    for x in range(p0.shape[0]):
        marg = p0[x]
        h = -np.sum(marg * np.log(marg))
        for _ in range(spec.length - 1):
            h += marg @ row_h[x]
            marg = marg @ trans[x]
        total += h
    return total / p0.shape[0] / spec.length


def sample_g(task: Task, key: jax.Array, prompts: jax.Array, length: int) -> jax.Array:
    """Responses ``[B, L]`` drawn from G for ``prompts [B]``."""
    keys = jax.random.split(key, length)
    first = jax.random.categorical(keys[0], jnp.log(task.p0[prompts]))

    def step(prev, k):
        nxt = jax.random.categorical(k, jnp.log(task.trans[prompts, prev]))
        return nxt, nxt

    _, rest = jax.lax.scan(step, first, keys[1:])
    return jnp.concatenate([first[:, None], rest.T], axis=1).astype(jnp.int32)


def make_task(spec: TaskSpec | None = None) -> Task:
    """Draw a task from ``spec.seed``: G's rows, the gold weights, its exact standardisation
    under G and the label temperature."""
    spec = spec or TaskSpec()
    check_spec(spec)
    rng = np.random.default_rng(spec.seed)
    p, k = spec.n_prompts, spec.n_tokens
    alpha = np.full(k, spec.concentration)
    p0 = rng.dirichlet(alpha, size=p)
    trans = rng.dirichlet(alpha, size=(p, k))
    # Keep every probability away from zero so that log G is finite everywhere.
    p0 = (p0 + 1e-3) / (1 + k * 1e-3)
    trans = (trans + 1e-3) / (1 + k * 1e-3)
    weights = rng.normal(size=(p, k))
    p0, trans, weights = (jnp.asarray(a, jnp.float32) for a in (p0, trans, weights))

    ys = jnp.asarray(all_responses(k, spec.length))
    prompts = jnp.arange(p)[:, None].repeat(ys.shape[0], axis=1)  # [P, N]
    resp = jnp.broadcast_to(ys, (p, *ys.shape))
    g = np.exp(np.asarray(sequence_log_probs_g(p0, trans, prompts, resp), np.float64)) / p  # joint, uniform x
    raw = np.asarray(raw_gold(weights, spec, prompts, resp), np.float64)
    mean = float(np.sum(g * raw))
    std = float(np.sqrt(np.sum(g * (raw - mean) ** 2)))
    tau = _label_temperature(g, (raw - mean) / std, spec.label_noise, rng)
    return Task(p0, trans, weights, jnp.float32(mean), jnp.float32(std), jnp.float32(tau))


def _label_temperature(g: np.ndarray, gold: np.ndarray, noise: float, rng: np.random.Generator) -> float:
    """The Bradley-Terry temperature whose expected label noise on pairs from G is ``noise``:
    E[sigmoid(-|r1 - r2| / tau)], estimated on 200,000 pairs with the task's own seed."""
    n = 200_000
    flat = g.reshape(-1)
    rows = rng.choice(flat.size, size=n, p=flat / flat.sum())
    prompt = rows // gold.shape[1]
    # The second response from G given the same prompt.
    cdf = np.cumsum(g / g.sum(axis=1, keepdims=True), axis=1)
    u = rng.random(n)
    other = np.empty(n, np.int64)
    for x in range(gold.shape[0]):
        sel = prompt == x
        other[sel] = np.minimum(np.searchsorted(cdf[x], u[sel], side="right"), gold.shape[1] - 1)
    gap = np.abs(gold.reshape(-1)[rows] - gold[prompt, other])
    lo, hi = 1e-3, 10.0
    for _ in range(60):
        mid = np.sqrt(lo * hi)
        rate = np.mean(1.0 / (1.0 + np.exp(gap / mid)))
        lo, hi = (mid, hi) if rate < noise else (lo, mid)
    return float(np.sqrt(lo * hi))


class Preferences(NamedTuple):
    """Preference pairs: ``chosen`` was labelled better than ``rejected``."""

    prompts: jax.Array  # [N]
    chosen: jax.Array  # [N, L]
    rejected: jax.Array  # [N, L]


def label_pairs(task: Task, spec: TaskSpec, key: jax.Array, prompts: jax.Array, y1: jax.Array, y2: jax.Array):
    """Bradley-Terry labels on gold: ``y1`` is chosen with probability sigmoid((r*1 - r*2) / tau)."""
    d = gold_reward(task, spec, prompts, y1) - gold_reward(task, spec, prompts, y2)
    first = jax.random.bernoulli(key, jax.nn.sigmoid(d / task.tau))
    chosen = jnp.where(first[:, None], y1, y2)
    rejected = jnp.where(first[:, None], y2, y1)
    return Preferences(prompts, chosen, rejected)
