"""TRPO's policy step (``algo="trpo"``): a natural-gradient step kept within a KL trust region.

Schulman et al., "Trust Region Policy Optimization" (2015), section 6 and appendix C. With the
batch drawn from pi_old and advantages A::

    L(theta)  = mean( pi_theta(a|s) / pi_old(a|s) * A )           the surrogate
    KL(theta) = mean_s KL[pi_old(.|s) || pi_theta(.|s)]            exact, per distribution
    g = grad L(theta_old);  F v = grad (grad KL . v) + damping v   (Fisher-vector products by autodiff)
    x ~ F^-1 g by cg_iters steps of conjugate gradient
    step = sqrt(2 max_kl / x.F x) * x                              the quadratic model's KL is max_kl
    theta = theta_old + ratio^i step for the first i < backtrack_iters with
            L(theta) > L(theta_old) and KL(theta) <= max_kl; else theta_old.

The critic is fitted afterwards by Adam epochs of minibatches on the value loss alone (PPO's
epoch/minibatch loop with a value-only loss). The parameters of ``critic_torso`` and
``value_head`` belong to the critic; everything else (the actor, a shared torso, the GRU of a
recurrent policy) to the policy, moved only by the TRPO step.

Every function below is pure; :func:`optimise` is the ``optimise`` stage of
:func:`purejaxppo.core.train.make_stages` for ``algo="trpo"``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from purejaxppo.core import losses, stages
from purejaxppo.core.distributions import Categorical, DiagGaussian, TanhGaussian

if TYPE_CHECKING:
    from purejaxppo.core.parts import Parts

CRITIC_MODULES = stages.CRITIC_MODULES


# --- exact KL per distribution ------------------------------------------------------------------

def categorical_kl(old_logits: jax.Array, new_logits: jax.Array) -> jax.Array:
    """KL[p_old || p_new] = sum_a p_old(a) (log p_old(a) - log p_new(a)), per row ``[...]``."""
    old_logp, new_logp = jax.nn.log_softmax(old_logits), jax.nn.log_softmax(new_logits)
    return jnp.sum(jnp.exp(old_logp) * (old_logp - new_logp), axis=-1)


def gaussian_kl(old: tuple[jax.Array, jax.Array], new: tuple[jax.Array, jax.Array]) -> jax.Array:
    """KL between diagonal Gaussians ``(mean, log_std)``, per row::

        sum_d [ log s1 - log s0 + (s0^2 + (m0 - m1)^2) / (2 s1^2) - 1/2 ]

    Also the KL of the tanh-squashed Gaussians: an invertible map of both leaves it unchanged."""
    (m0, ls0), (m1, ls1) = old, new
    ls0, ls1 = jnp.broadcast_to(ls0, m0.shape), jnp.broadcast_to(ls1, m1.shape)
    return jnp.sum(ls1 - ls0 + (jnp.exp(2 * ls0) + jnp.square(m0 - m1)) / (2 * jnp.exp(2 * ls1)) - 0.5, axis=-1)


EXACT_KL: dict[Any, Callable[[Any, Any], jax.Array]] = {
    Categorical: categorical_kl,
    DiagGaussian: gaussian_kl,
    TanhGaussian: gaussian_kl,
}


def exact_kl(dist: Any) -> Callable[[Any, Any], jax.Array]:
    """``kl(old policy output, new policy output) -> [...]`` for the distribution ``dist``; a
    factored categorical (one with ``split``) sums its factors'."""
    if dist in EXACT_KL:
        return EXACT_KL[dist]
    if hasattr(dist, "split"):
        return lambda old, new: sum(categorical_kl(o, n) for o, n in zip(dist.split(old), dist.split(new)))
    raise NotImplementedError(f"algo trpo: no exact KL for the distribution {dist!r}")


# --- conjugate gradient and the line search ----------------------------------------------------

class CGCarry(NamedTuple):
    x: jax.Array  # [P] the solution so far
    r: jax.Array  # [P] residual b - A x
    p: jax.Array  # [P] search direction
    rr: jax.Array  # [] r . r


def conjugate_gradient(matvec: Callable[[jax.Array], jax.Array], b: jax.Array, iters: int) -> jax.Array:
    """``iters`` steps of conjugate gradient on ``A x = b`` from ``x = 0`` (Hestenes and Stiefel), ``A``
    symmetric positive definite given only as ``matvec(v) = A v``; exact after ``len(b)`` steps in exact
    arithmetic. A converged residual (``r . r = 0``) stops moving instead of dividing by zero."""
    assert b.ndim == 1, b.shape

    def step(_, c: CGCarry) -> CGCarry:
        ap = matvec(c.p)
        pap = c.p @ ap
        alpha = jnp.where(pap > 0, c.rr / jnp.where(pap > 0, pap, 1.0), 0.0)
        x, r = c.x + alpha * c.p, c.r - alpha * ap
        rr = r @ r
        beta = jnp.where(c.rr > 0, rr / jnp.where(c.rr > 0, c.rr, 1.0), 0.0)
        return CGCarry(x, r, r + beta * c.p, rr)

    return jax.lax.fori_loop(0, iters, step, CGCarry(jnp.zeros_like(b), b, b, b @ b)).x


def fisher_vector_product(mean_kl: Callable[[jax.Array], jax.Array], theta: jax.Array,
                          damping: jax.Array | float) -> Callable[[jax.Array], jax.Array]:
    """``v -> (F + damping I) v`` with ``F`` the Hessian of ``mean_kl`` at ``theta`` (its Fisher
    information when ``mean_kl(theta') = KL[pi_theta || pi_theta']``): the gradient of
    ``grad KL . v``, no matrix formed. Reverse over reverse: the dense layers' custom gradient
    (core/layout.py) has no forward mode."""
    grad_kl = jax.grad(mean_kl)
    return lambda v: jax.grad(lambda t: grad_kl(t) @ v)(theta) + damping * v


class LineSearch(NamedTuple):
    """The outcome of the backtracking line search."""

    step_kl: jax.Array  # [] mean KL of the accepted step (0 when none was)
    surrogate_improvement: jax.Array  # [] L(new) - L(old) of the accepted step (0 when none was)
    backtracks: jax.Array  # [] int32: shrinkings before the accepted step (backtrack_iters when none)
    accepted: jax.Array  # [] bool


class _TryCarry(NamedTuple):
    i: jax.Array  # [] int32 the try being made
    ok: jax.Array  # [] bool: try i was accepted
    improvement: jax.Array  # []
    kl: jax.Array  # []


def line_search(surrogate: Callable[[jax.Array], jax.Array], mean_kl: Callable[[jax.Array], jax.Array],
                theta: jax.Array, full_step: jax.Array, max_kl: jax.Array | float, ratio: jax.Array | float,
                iters: int) -> tuple[jax.Array, LineSearch]:
    """Try ``theta + ratio^i full_step`` for ``i = 0 .. iters - 1``; accept the first that improves the
    surrogate and keeps the mean KL within ``max_kl``. Returns ``(new theta, LineSearch)``; ``theta``
    itself when no try was accepted."""
    base = surrogate(theta)

    def attempt(c: _TryCarry) -> _TryCarry:
        candidate = theta + ratio ** c.i.astype(theta.dtype) * full_step
        improvement, kl = surrogate(candidate) - base, mean_kl(candidate)
        ok = (improvement > 0) & (kl <= max_kl) & jnp.isfinite(improvement) & jnp.isfinite(kl)
        return _TryCarry(c.i + (~ok).astype(jnp.int32), ok, improvement, kl)

    zero = jnp.zeros((), theta.dtype)
    end = jax.lax.while_loop(lambda c: (~c.ok) & (c.i < iters), attempt,
                             _TryCarry(jnp.zeros((), jnp.int32), jnp.zeros((), bool), zero, zero))
    new = jnp.where(end.ok, theta + ratio ** end.i.astype(theta.dtype) * full_step, theta)
    return new, LineSearch(jnp.where(end.ok, end.kl, 0.0), jnp.where(end.ok, end.improvement, 0.0), end.i, end.ok)


def trust_region_step(surrogate: Callable[[jax.Array], jax.Array], mean_kl: Callable[[jax.Array], jax.Array],
                      theta: jax.Array, hparams: Any, cg_iters: int, backtrack_iters: int,
                      mean: Callable[[Any], Any] = lambda x: x):
    """TRPO's update of the flat policy parameters ``theta [P]``: gradient, natural direction by
    conjugate gradient, the step scaled to ``max_kl``, the line search. ``(new theta, LineSearch)``.

    ``surrogate`` and ``mean_kl`` are this device's; ``mean`` averages over devices what is made of
    them (values, gradients, Fisher-vector products), from outside the derivatives, as PPO's step does."""
    g = mean(jax.grad(surrogate)(theta))
    local_fvp = fisher_vector_product(mean_kl, theta, 0.0)

    def fvp(v):
        return mean(local_fvp(v)) + hparams.cg_damping * v

    x = conjugate_gradient(fvp, g, cg_iters)
    xfx = x @ fvp(x)
    scale = jnp.where(xfx > 0, jnp.sqrt(2.0 * hparams.max_kl / jnp.where(xfx > 0, xfx, 1.0)), 0.0)
    return line_search(lambda t: mean(surrogate(t)), lambda t: mean(mean_kl(t)), theta, scale * x, hparams.max_kl,
                       hparams.backtrack_ratio, backtrack_iters)


# --- the stage -----------------------------------------------------------------------------------

def policy_part(params: Any) -> dict:
    """The policy's parameters: every module of ``params["params"]`` but the critic's own."""
    return {k: v for k, v in params["params"].items() if k not in CRITIC_MODULES}


def with_policy(params: Any, policy: dict) -> Any:
    """``params`` with the policy's parameters replaced by ``policy``."""
    return {**params, "params": {**params["params"], **policy}}


class TRPOInfo(NamedTuple):
    """PPO's loss columns (for the same schema) and the TRPO step's own."""

    policy_loss: jax.Array  # -L(theta_new)
    value_loss: jax.Array  # critic's value loss, mean over its minibatches
    entropy: jax.Array  # mean entropy of pi_new on the batch
    approx_kl: jax.Array  # kl_estimate of log pi_new - log pi_old on the batch's actions
    clipfrac: jax.Array  # fraction of ratios outside [1 - clip_eps, 1 + clip_eps] (diagnostic only)
    step_kl: jax.Array
    surrogate_improvement: jax.Array
    backtracks: jax.Array
    accepted: jax.Array


def policy_step(parts: Parts, batch: Any, params: Any, hparams: Any) -> tuple[Any, TRPOInfo]:
    """The TRPO step on ``batch`` (the policy kind's), from ``params``; the critic left as it is."""
    config, comm, dist = parts.config, parts.comm, parts.dist
    if config.norm_adv:  # statistics of the whole batch
        batch = batch._replace(advantage=losses.normalize_advantages(batch.advantage))
    theta, unravel = ravel_pytree(policy_part(params))
    kl = exact_kl(dist)

    def evaluate(flat):
        return parts.policy.new_policy(parts, with_policy(params, unravel(flat)), batch)

    pi_old, mine = evaluate(theta)
    pi_old = jax.lax.stop_gradient(pi_old)

    def log_ratio(pi):
        return dist.log_prob(pi, mine.action) - mine.log_prob

    def surrogate(flat):  # this device's share; averaged over devices by trust_region_step
        return jnp.mean(jnp.exp(log_ratio(evaluate(flat)[0])) * mine.advantage)

    def mean_kl(flat):
        return jnp.mean(kl(pi_old, evaluate(flat)[0]))

    new_theta, search = trust_region_step(surrogate, mean_kl, theta, hparams, config.cg_iters, config.backtrack_iters,
                                          comm.mean)
    new_params = with_policy(params, unravel(new_theta))
    pi_new = evaluate(new_theta)[0]
    ratio_log = log_ratio(pi_new)
    info = TRPOInfo(
        policy_loss=-comm.mean(surrogate(new_theta)),
        value_loss=jnp.zeros((), jnp.float32),
        entropy=comm.mean(jnp.mean(dist.entropy(pi_new, mine.action))),
        approx_kl=comm.mean(losses.kl_estimate(ratio_log.reshape(-1))),
        clipfrac=comm.mean(jnp.mean((jnp.abs(jnp.exp(ratio_log) - 1.0) > hparams.clip_eps).astype(jnp.float32))),
        step_kl=search.step_kl,
        surrogate_improvement=search.surrogate_improvement,
        backtracks=search.backtracks,
        accepted=search.accepted.astype(jnp.int32),
    )
    return new_params, info


def value_only_loss(clip_vloss: bool):
    """``apply_fn -> loss(params, minibatch, hparams, kl_coef) -> (value loss, LossInfo)``: the
    critic's loss alone, the policy's parameters held fixed (no gradient reaches them)."""

    def make(apply_fn):
        def loss(params, mb, hparams, kl_coef):
            params = with_policy(params, jax.lax.stop_gradient(policy_part(params)))
            _, values = apply_fn(params, mb.obs)
            v_loss = losses.value_loss(values, mb.value, mb.target, hparams.vf_clip_eps, clip_vloss)
            zero = jnp.zeros((), jnp.float32)
            return v_loss, losses.LossInfo(zero, v_loss, zero, zero, zero)

        return loss

    return make


def optimise(parts: Parts, opt: stages.Optimiser, batch: Any, params: Any, opt_state: Any, key: jax.Array):
    """TRPO's ``optimise`` stage: the trust-region policy step, then ``update_epochs`` Adam epochs of
    minibatches on the value loss (PPO's loop, run with the value-only loss).

    Returns ``(params, opt_state, TRPOInfo, critic epochs run)``.
    """
    params, info = policy_step(parts, batch, params, opt.hparams)
    critic = parts._replace(loss=value_only_loss(parts.config.clip_vloss))
    params, opt_state, fit, epochs = stages.optimise(critic, opt, batch, params, opt_state, key)
    return params, opt_state, info._replace(value_loss=fit.value_loss), epochs
