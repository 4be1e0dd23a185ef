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


# ---- ensembles (Coste et al. 2023, "Reward Model Ensembles Help Mitigate Overoptimization") ------
def member_scores(model, rm: RewardModel, prompts: jax.Array, responses: jax.Array) -> jax.Array:
    """The normalised proxy of each member, ``[M, ...]``: a single model (``shift`` of shape ``[]``)
    is an ensemble of one; an ensemble's fields carry a leading member axis ``[M]``."""
    if rm.shift.ndim == 0:
        return proxy_reward(model, rm, prompts, responses)[None]
    return jax.vmap(lambda r: proxy_reward(model, r, prompts, responses))(rm)


def combine(scores: jax.Array, penalty: jax.Array | float, worst: jax.Array | float) -> jax.Array:
    """The ensemble's objective from member scores ``[M, ...] -> [...]``:

        worst < 0.5:  mean_m s_m - penalty * std_m s_m   (mean: penalty 0; uncertainty-weighted: penalty > 0)
        worst >= 0.5: min_m s_m                           (worst case)

    Both settings are traced, so the three objectives vmap in one program; one member gives its
    own score whatever the settings."""
    mean = jnp.mean(scores, axis=0)
    weighted = mean - penalty * jnp.std(scores, axis=0)
    return jnp.where(jnp.asarray(worst) >= 0.5, jnp.min(scores, axis=0), weighted)


def spread(scores: jax.Array) -> jax.Array:
    """The members' disagreement: ``std_m s_m`` averaged over responses, ``[M, B] -> []``."""
    return jnp.mean(jnp.std(scores, axis=0))


def bootstrap_pairs(pairs: Preferences, key: jax.Array) -> Preferences:
    """A bootstrap resample of the pairs (``N`` drawn with replacement from ``N``)."""
    n = pairs.prompts.shape[0]
    idx = jax.random.randint(key, (n,), 0, n)
    return Preferences(pairs.prompts[idx], pairs.chosen[idx], pairs.rejected[idx])


def train_ensemble(model, sft_params, pairs: Preferences, keys: jax.Array, settings: RewardSettings | None = None):
    """``M`` reward models, one per key ``[M]``, each on its own bootstrap resample of the pairs,
    its own score-head initialisation and its own minibatch order: one vmapped program.
    Returns ``(params [M, ...], losses [M, steps])``. Pure."""

    def one(key):
        k_boot, k_head, k_train = jax.random.split(key, 3)
        params = jax.tree_util.tree_map(jnp.array, sft_params)
        head = params["params"]["score_head"]
        kernel = 0.02 * jax.random.normal(k_head, head["kernel"].shape, head["kernel"].dtype)
        params["params"]["score_head"] = {**head, "kernel": kernel}
        return train_reward_model(model, params, bootstrap_pairs(pairs, k_boot), k_train, settings)

    return jax.vmap(one)(keys)
