"""The reward model: the SFT trunk with a scalar head on the last token, trained on
preference pairs with the Bradley-Terry loss, then normalised on reference samples.

    L = -mean log sigmoid(s(x, y_chosen) - s(x, y_rejected))

After training, ``proxy = (s - shift) / scale`` with the mean and standard deviation of ``s`` on
fresh samples of the reference policy, so proxy gains read in the reward model's standard
deviations ("RM sigma").
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from purejaxppo.rlhf import model as seqmodel
from purejaxppo.rlhf.fit import minibatch_epochs
from purejaxppo.rlhf.task import Preferences


class RewardSettings(NamedTuple):
    epochs: int = 6
    batch: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 1e-2
    normalise_samples: int = 16384


class RewardModel(NamedTuple):
    params: object
    shift: jax.Array  # [] mean raw score on reference samples
    scale: jax.Array  # [] std of the raw score on reference samples


def bradley_terry_loss(chosen_scores: jax.Array, rejected_scores: jax.Array) -> jax.Array:
    """``-mean log sigmoid(s_chosen - s_rejected)``."""
    assert chosen_scores.shape == rejected_scores.shape and chosen_scores.ndim == 1
    return -jnp.mean(jax.nn.log_sigmoid(chosen_scores - rejected_scores))


def proxy_reward(model, rm: RewardModel, prompts: jax.Array, responses: jax.Array) -> jax.Array:
    """The normalised proxy reward of ``responses [..., L]``."""
    return (seqmodel.scores(model, rm.params, prompts, responses) - rm.shift) / rm.scale


def train_reward_model(model, sft_params, pairs: Preferences, key: jax.Array, settings: RewardSettings | None = None):
    """Bradley-Terry training from the SFT parameters, shuffled minibatches for ``epochs``.

    Returns ``(params, losses [epochs * batches])``; normalise with :func:`normalise`. Pure.
    """
    settings = settings or RewardSettings()
    n = pairs.prompts.shape[0]
    batches = n // settings.batch
    steps = settings.epochs * batches
    opt = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.adamw(optax.cosine_decay_schedule(settings.learning_rate, steps), weight_decay=settings.weight_decay),
    )
    params = sft_params

    def loss_fn(p, idx):
        s_c = seqmodel.scores(model, p, pairs.prompts[idx], pairs.chosen[idx])
        s_r = seqmodel.scores(model, p, pairs.prompts[idx], pairs.rejected[idx])
        return bradley_terry_loss(s_c, s_r)

    return minibatch_epochs(loss_fn, opt, params, n, settings.batch, settings.epochs, key)


def normalise(model, params, ref_params, key: jax.Array, n_prompts: int, samples: int) -> RewardModel:
    """Shift and scale from ``samples`` responses of the reference policy (uniform prompts)."""
    kp, ks = jax.random.split(key)
    prompts = jax.random.randint(kp, (samples,), 0, n_prompts)
    responses = seqmodel.sample(model, ref_params, ks, prompts)
    s = seqmodel.scores(model, params, prompts, responses)
    return RewardModel(params, jnp.mean(s), jnp.std(s))
