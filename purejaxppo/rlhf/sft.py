"""Supervised fine-tuning: the reference policy, trained by teacher forcing on samples of G.

Every step draws a fresh batch from G (an unlimited dataset), so the loss on any later
sample is a held-out loss; its floor is G's entropy per token
(:func:`purejaxppo.rlhf.task.entropy_per_token`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from purejaxppo.rlhf import model as seqmodel
from purejaxppo.rlhf.task import Task, TaskSpec, sample_g


class SFTSettings(NamedTuple):
    steps: int = 1500
    batch: int = 256
    learning_rate: float = 3e-3


def g_batch(task: Task, key: jax.Array, size: int, length: int) -> tuple[jax.Array, jax.Array]:
    """``(prompts [B], responses [B, L])`` with uniform prompts and responses from G."""
    kp, ky = jax.random.split(key)
    prompts = jax.random.randint(kp, (size,), 0, task.n_prompts)
    return prompts, sample_g(task, ky, prompts, length)


def nll_per_token(model, params, prompts: jax.Array, responses: jax.Array) -> jax.Array:
    """Mean ``-log pi(y_t | x, y_<t)`` over the batch and the positions."""
    return -jnp.mean(seqmodel.token_log_probs(model, params, prompts, responses))


def train_sft(model, task: Task, spec: TaskSpec, key: jax.Array, settings: SFTSettings | None = None):
    """Train from scratch; returns ``(params, losses [steps])``. Pure: jit it at the call site."""
    settings = settings or SFTSettings()
    k_init, k_data = jax.random.split(key)
    params = seqmodel.init_params(model, k_init)
    warmup = min(100, settings.steps // 10)
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, settings.learning_rate, warmup, settings.steps, 0.02 * settings.learning_rate
    )
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=1e-4))
    opt_state = opt.init(params)

    def step(carry, k):
        params, opt_state = carry
        prompts, responses = g_batch(task, k, settings.batch, spec.length)
        loss, grads = jax.value_and_grad(lambda p: nll_per_token(model, p, prompts, responses))(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    (params, _), losses = jax.lax.scan(step, (params, opt_state), jax.random.split(k_data, settings.steps))
    return params, losses
