"""Direct Preference Optimisation (Rafailov et al., 2023) on the reward model's pairs.

    L = -mean log sigmoid( beta * [ (log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x)) ] )

The policy starts from the reference (the SFT model). ``beta`` is traced, so several betas
train as one vmapped program. The implicit reward is ``beta * (log pi(y|x) - log ref(y|x))``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from purejaxppo.rlhf import model as seqmodel
from purejaxppo.rlhf.fit import minibatch_epochs
from purejaxppo.rlhf.task import Preferences


class DPOSettings(NamedTuple):
    epochs: int = 4
    batch: int = 128
    learning_rate: float = 5e-4


def dpo_loss(
    policy_chosen: jax.Array, policy_rejected: jax.Array, ref_chosen: jax.Array, ref_rejected: jax.Array, beta
) -> jax.Array:
    """The DPO loss from sequence log-probabilities, each ``[B]``."""
    assert policy_chosen.ndim == 1
    margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    return -jnp.mean(jax.nn.log_sigmoid(beta * margin))


def implicit_reward(model, params, ref_params, prompts, responses, beta) -> jax.Array:
    """``beta * (log pi(y|x) - log ref(y|x))``."""
    return beta * (
        seqmodel.sequence_log_probs(model, params, prompts, responses)
        - seqmodel.sequence_log_probs(model, ref_params, prompts, responses)
    )


def train_dpo(model, ref_params, pairs: Preferences, key: jax.Array, beta, settings: DPOSettings | None = None):
    """Returns ``(params, losses [epochs * batches])``. Pure; vmap over ``beta`` (and ``key``)."""
    settings = settings or DPOSettings()
    n = pairs.prompts.shape[0]
    batches = n // settings.batch
    steps = settings.epochs * batches
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(optax.cosine_decay_schedule(settings.learning_rate, steps)))
    # The reference's log-probabilities of the pairs are fixed: computed once.
    ref_c = seqmodel.sequence_log_probs(model, ref_params, pairs.prompts, pairs.chosen)
    ref_r = seqmodel.sequence_log_probs(model, ref_params, pairs.prompts, pairs.rejected)
    params = ref_params

    def loss_fn(p, idx):
        pc = seqmodel.sequence_log_probs(model, p, pairs.prompts[idx], pairs.chosen[idx])
        pr = seqmodel.sequence_log_probs(model, p, pairs.prompts[idx], pairs.rejected[idx])
        return dpo_loss(pc, pr, ref_c[idx], ref_r[idx], beta)

    return minibatch_epochs(loss_fn, opt, params, n, settings.batch, settings.epochs, key)
