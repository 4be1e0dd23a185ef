"""A policy kind: the stages that differ between feed-forward and recurrent policies, as one bundle.

:data:`purejaxppo.core.feedforward.KIND` and :data:`purejaxppo.core.recurrent.KIND` are the two;
the trainer picks one where it is made (:func:`purejaxppo.core.parts.make_parts`), and every
stage after that calls the bundle without asking which it got.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple


class PolicyKind(NamedTuple):
    """The stages of one policy architecture.

    Attributes:
        name: the ``policy`` setting that selects it.
        make_network: ``(config, env, layout) -> network``.
        init_params: ``(network, key, obs_dim) -> params``.
        make_act: ``(config, network, dist, comm) -> act`` (the signature differs: see each kind).
        stateful: whether the policy carries a memory from step to step (its action depends on
            more than the current observation).
        init_memory: ``(config, shape) -> memory`` carried from step to step by environments of
            batch ``shape`` at an episode's start (None for a feed-forward policy).
        stepper: ``act -> step(params, obs_rms, memory, obs, key, deterministic) -> (memory,
            action, log_prob)``: acting with one signature for every kind (evaluation).
        collect: ``(parts, state, key) -> (state, rollout, EpisodeStats)``.
        make_batch: ``(parts, state, rollout, hparams) -> (state, batch)``.
        loss_inputs: ``(parts, minibatch) -> (apply(params, obs) -> (pi, values), this device's share)``.
        new_policy: ``(parts, params, batch) -> (pi on this device's share, that share)``.
        run_epoch: ``(parts, opt, batch, params, opt_state, key) -> (params, opt_state, LossInfo)``.
        recompute_advantages: ``(parts, params, batch, hparams) -> batch`` with the advantages and
            targets of ``params``' critic, for ``recompute_advantages`` (None: the kind has none).
        run_trajectory_epoch: ``run_epoch`` with minibatches of whole trajectories and a ``rows``
            argument, ``(parts, params, batch, envs, hparams) -> minibatch``, for
            ``trajectory_minibatches`` (None: the kind has none).
        recomputed_trajectory_rows: the ``rows`` that recompute the minibatch's advantages with
            ``recompute_advantages`` (None: the kind has none).
    """

    name: str
    stateful: bool
    make_network: Callable[..., Any]
    init_params: Callable[..., Any]
    make_act: Callable[..., Any]
    init_memory: Callable[..., Any]
    stepper: Callable[..., Any]
    collect: Callable[..., Any]
    make_batch: Callable[..., Any]
    loss_inputs: Callable[..., Any]
    new_policy: Callable[..., Any]
    run_epoch: Callable[..., Any]
    recompute_advantages: Callable[..., Any] | None = None
    run_trajectory_epoch: Callable[..., Any] | None = None
    recomputed_trajectory_rows: Callable[..., Any] | None = None
