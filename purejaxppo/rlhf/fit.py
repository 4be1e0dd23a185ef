"""The supervised loop the reward model and DPO share: shuffled minibatches of a fixed set of
pairs for some epochs, one optax step each, all in one ``lax.scan``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import optax

from purejaxppo.core.stages import minibatch_order, scan_epochs


def minibatch_epochs(
    loss_fn: Callable[[Any, jax.Array], jax.Array],
    opt: optax.GradientTransformation,
    params: Any,
    n: int,
    batch: int,
    epochs: int,
    key: jax.Array,
) -> tuple[Any, jax.Array]:
    """Minimise ``loss_fn(params, indices [batch])`` over ``n`` examples; each epoch a fresh
    permutation cut into ``n // batch`` minibatches (the remainder left out). Returns
    ``(params, losses [epochs * (n // batch)])``. Pure."""
    batches = n // batch

    def epoch(carry, k):
        def minibatch(carry, idx):
            params, opt_state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params, idx)
            updates, opt_state = opt.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        return jax.lax.scan(minibatch, carry, minibatch_order(jax.random.permutation, k, n, batches, batch))

    (params, _), losses = scan_epochs(epoch, (params, opt.init(params)), key, epochs)
    return params, losses.reshape(-1)
