"""A tiny causal transformer over ``[prompt, y_1, ..., y_L]``, and the sequence functions on it.

One forward pass of the ``L + 1`` tokens gives, at position ``t`` (``0 .. L``):

* ``logits[t]``: the distribution of ``y_{t+1}`` given the prompt and ``y_1 .. y_t`` (used for
  ``t < L``);
* ``value[t]``: the critic's value of that state (a zero-initialised head on the same trunk);
* ``score[t]``: a scalar head read at the last position ``t = L`` by the reward model.

The causal mask makes position ``t`` blind to later tokens, so the whole response's token
log-probabilities come from one teacher-forced pass, and a policy, its reference and the reward
model can share the architecture (and the reward model its initial trunk).
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from purejaxppo.core.distributions import Categorical


class ModelSpec(NamedTuple):
    """Static sizes of the transformer."""

    width: int = 48
    layers: int = 2
    heads: int = 4


class SequenceModel(nn.Module):
    n_tokens: int  # K content tokens (the output vocabulary)
    n_prompts: int
    length: int  # L
    width: int = 48
    layers: int = 2
    heads: int = 4

    @nn.compact
    def __call__(self, tokens: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``tokens [..., L + 1]`` -> ``(logits [..., L + 1, K], value [..., L + 1], score [..., L + 1])``."""
        s = tokens.shape[-1]
        x = nn.Embed(self.n_tokens + self.n_prompts, self.width, name="embed")(tokens)
        pos = self.param("positions", nn.initializers.normal(0.02), (self.length + 1, self.width))
        x = x + pos[:s]
        mask = nn.make_causal_mask(tokens)
        for i in range(self.layers):
            h = nn.LayerNorm(name=f"ln_attn_{i}")(x)
            x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads, name=f"attn_{i}")(h, h, mask=mask)
            h = nn.LayerNorm(name=f"ln_mlp_{i}")(x)
            h = nn.Dense(4 * self.width, name=f"mlp_in_{i}")(h)
            x = x + nn.Dense(self.width, name=f"mlp_out_{i}")(nn.gelu(h))
        h = nn.LayerNorm(name="ln_out")(x)
        logits = nn.Dense(self.n_tokens, name="lm_head")(h)
        value = nn.Dense(1, kernel_init=nn.initializers.zeros, name="value_head")(h)[..., 0]
        score = nn.Dense(1, name="score_head")(h)[..., 0]
        return logits, value, score


def make_model(n_tokens: int, n_prompts: int, length: int, spec: ModelSpec | None = None) -> SequenceModel:
    spec = spec or ModelSpec()
    return SequenceModel(n_tokens, n_prompts, length, spec.width, spec.layers, spec.heads)


def inputs(model: SequenceModel, prompts: jax.Array, responses: jax.Array) -> jax.Array:
    """The token sequence ``[..., L + 1]``: the prompt token, then the response."""
    return jnp.concatenate([(prompts + model.n_tokens)[..., None], responses], axis=-1).astype(jnp.int32)


def init_params(model: SequenceModel, key: jax.Array):
    dummy = jnp.zeros((1, model.length + 1), jnp.int32)
    return model.init(key, dummy)


def token_log_probs(model: SequenceModel, params, prompts: jax.Array, responses: jax.Array) -> jax.Array:
    """Teacher-forced ``log pi(y_t | x, y_<t)``, ``[..., L]``."""
    logits, _, _ = model.apply(params, inputs(model, prompts, responses))
    return Categorical.log_prob(logits[..., :-1, :], responses)


def sequence_log_probs(model: SequenceModel, params, prompts: jax.Array, responses: jax.Array) -> jax.Array:
    """``log pi(y | x)`` of whole responses, ``[...]``."""
    return jnp.sum(token_log_probs(model, params, prompts, responses), axis=-1)


def scores(model: SequenceModel, params, prompts: jax.Array, responses: jax.Array) -> jax.Array:
    """The scalar head at the last position (the reward model's output), ``[...]``."""
    _, _, score = model.apply(params, inputs(model, prompts, responses))
    return score[..., -1]


def sample(model: SequenceModel, params, key: jax.Array, prompts: jax.Array) -> jax.Array:
    """Responses ``[B, L]`` drawn token by token (``lax.scan`` over positions), each step a
    causal pass over the tokens so far (the later, unfilled positions cannot affect it)."""
    b = prompts.shape[0]

    def step(responses, inp):
        t, k = inp
        logits, _, _ = model.apply(params, inputs(model, prompts, responses))
        logits_t = jax.lax.dynamic_index_in_dim(logits, t, axis=-2, keepdims=False)
        token = Categorical.sample(k, logits_t)
        return jax.lax.dynamic_update_index_in_dim(responses, token, t, axis=1), None

    steps = (jnp.arange(model.length), jax.random.split(key, model.length))
    responses, _ = jax.lax.scan(step, jnp.zeros((b, model.length), jnp.int32), steps)
    return responses
