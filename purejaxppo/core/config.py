"""Every setting of a training run: one frozen dataclass, presets and validation.

Fields fall in two kinds:

* *static* fields change shapes or the structure of the compiled program
  (``num_envs``, network widths, switches). Changing one means compiling again.
* *float hyperparameters* (``lr``, ``gamma``, ``gae_lambda``, ``clip_eps``, ...)
  are copied into :class:`HParams`, which ``train`` takes as a traced argument:
  changing them never recompiles and they can be vmapped for sweeps.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from purejaxppo.errors import ConfigError
from purejaxppo.naming import suggest  # re-exported: presets and the config's own field check use it

ACTIVATIONS = ("tanh", "relu", "gelu", "silu", "elu")
KL_PENALTIES = ("off", "fixed", "adaptive")
POLICIES = ("mlp", "gru")
TORSOS = ("mlp", "cnn")
ACTION_DISTS = ("gaussian", "tanh")
ALGOS = ("ppo", "trpo")


@dataclass(frozen=True)
class PPOConfig:
    """Settings of one PPO training run."""

    env: str = "CartPole-v1"
    """Environment: a registered gymnax name (e.g. CartPole-v1, Breakout-MinAtar) or a probe (Probe-Constant, ...)."""
    seed: int = 0
    """Seed of the PRNG key the whole run is derived from."""
    total_timesteps: int = 500_000
    """Environment steps to train for (rounded down to whole updates of num_envs * num_steps)."""
    num_envs: int = 4
    """Parallel environments stepped in lock-step (vmapped)."""
    num_steps: int = 128
    """Steps collected from each environment per update (rollout length T)."""
    num_minibatches: int = 4
    """Minibatches each epoch is split into; must divide num_envs * num_steps."""
    update_epochs: int = 4
    """Passes of shuffled minibatch updates over each batch."""

    lr: float = 2.5e-4
    """Adam learning rate (traced)."""
    anneal_lr: bool = True
    """Decay the learning rate linearly to zero over the run."""
    adam_eps: float = 1e-5
    """Adam epsilon (traced)."""
    gamma: float = 0.99
    """Discount factor (traced)."""
    gae_lambda: float = 0.95
    """GAE lambda (traced)."""
    clip_eps: float = 0.2
    """Clip range epsilon of the surrogate objective; 0 turns clipping off (traced)."""
    clip_vloss: bool = True
    """Clip the value-function update to vf_clip_eps around the old value estimate."""
    vf_clip_eps: float = 0.2
    """Clip range of the value loss when clip_vloss is on (traced)."""
    ent_coef: float = 0.01
    """Entropy bonus coefficient (traced)."""
    vf_coef: float = 0.5
    """Value loss coefficient (traced)."""
    max_grad_norm: float = 0.5
    """Global-norm gradient clipping threshold (traced)."""
    clip_per_network: bool = False
    """Clip the critic's gradient and the actor's each to max_grad_norm (as Rejax's two optimisers do) instead of their joint norm, so a large value gradient does not shrink the policy's step; parts both use (a shared torso, the GRU) count as the actor's."""
    norm_adv: bool = True
    """Normalise advantages within each minibatch."""
    recompute_advantages: bool = False
    """Recompute the advantages and value targets with the critic of the moment at the start of every epoch (or of every minibatch, with trajectory_minibatches), instead of once per batch with the critic that collected it (Andrychowicz et al. 2021's recommendation; feed-forward PPO only)."""
    trajectory_minibatches: bool = False
    """Cut each epoch's minibatches from whole trajectories (the rollouts of num_envs / num_minibatches environments, shuffled) instead of shuffled rows; with recompute_advantages every minibatch recomputes its advantages first, as Brax's PPO loss does (feed-forward PPO on one device)."""

    kl_penalty: str = "off"
    """KL penalty to the pre-update policy: off, fixed (coefficient kl_coef) or adaptive (PPO paper rule steering to kl_target)."""
    kl_coef: float = 1.0
    """Initial (or fixed) KL penalty coefficient beta (traced)."""
    kl_target: float = 0.01
    """Target KL d_targ of the adaptive penalty: beta halves when KL < d_targ/1.5, doubles when KL > 1.5 d_targ (traced)."""
    target_kl: float = 0.0
    """Stop the remaining epochs of an update once an epoch's mean KL exceeds this; 0 turns early stopping off (traced)."""

    algo: str = "ppo"
    """Policy step: ppo (epochs of clipped-surrogate minibatches) or trpo (a natural-gradient step within max_kl, found by conjugate gradient and a line search; the critic is fitted by Adam epochs on the value loss)."""
    max_kl: float = 0.01
    """TRPO: the trust region, the largest mean KL[pi_old || pi_new] a step may take (traced)."""
    cg_damping: float = 0.1
    """TRPO: damping added to the Fisher-vector products, (F + damping I) x = g (traced)."""
    backtrack_ratio: float = 0.8
    """TRPO: the line search shrinks the step by this factor after each rejected try (traced)."""
    cg_iters: int = 10
    """TRPO: conjugate-gradient iterations."""
    backtrack_iters: int = 10
    """TRPO: line-search tries before the old policy is kept."""

    bootstrap_truncation: bool = True
    """Bootstrap from V(final observation) when an episode hits its time limit; off treats truncation as termination."""

    actor_hidden: tuple[int, ...] = (64, 64)
    """Hidden layer widths of the actor MLP (the shared torso when shared_torso is on)."""
    critic_hidden: tuple[int, ...] = (64, 64)
    """Hidden layer widths of the critic MLP (unused with shared_torso)."""
    activation: str = "tanh"
    """Hidden activation: tanh, relu, gelu, silu or elu."""
    shared_torso: bool = False
    """Actor and critic share one torso (actor_hidden) with two heads."""
    torso: str = "mlp"
    """mlp: the observation, flattened, goes to the MLPs; cnn: an image-like observation ([H, W, C] or [H, W]) goes through 3x3 convolutions (conv_channels) first."""
    conv_channels: tuple[int, ...] = (16, 32)
    """torso cnn: channels of each 3x3 convolution (stride 1, relu), before the MLPs."""
    reset_ratio: int = 1
    """Environments per reset computed at each step: 1 resets every environment that ended itself; k > 1 computes num_envs / k resets per step and hands them to the environments that ended (Craftax's optimistic resets: far fewer costly resets; must divide num_envs)."""
    policy: str = "mlp"
    """mlp (feed-forward), or gru: a recurrent actor-critic whose hidden state is carried across steps and reset at episode starts."""
    gru_hidden: int = 128
    """Width of the GRU's hidden state (policy gru only)."""
    seq_len: int = 0
    """Policy gru: the update re-runs chunks of this many consecutive steps, each from the hidden state at its start (0: each environment's whole rollout)."""
    log_std_init: float = 0.0
    """Initial log standard deviation of the Gaussian policy (continuous actions only)."""
    clip_actions: bool = True
    """Clip continuous actions to the action space bounds when stepping the environment (continuous actions only)."""
    action_dist: str = "gaussian"
    """Continuous actions: gaussian (a diagonal Gaussian, clipped per clip_actions) or tanh (squashed by tanh into the bounds; log-prob with the tanh Jacobian)."""
    state_dependent_std: bool = False
    """Continuous actions: the policy's standard deviation is an output of the actor (softplus, floor 1e-3) instead of a learned vector."""

    normalize_obs: bool = False
    """Normalise observations with running mean and variance carried in the training state."""
    normalize_reward: bool = False
    """Scale rewards by the running standard deviation of the discounted return."""
    clip_obs: float = 10.0
    """Clip normalised observations to [-clip_obs, clip_obs]."""
    clip_reward: float = 10.0
    """Clip scaled rewards to [-clip_reward, clip_reward]."""
    reward_scale: float = 1.0
    """Constant factor on every reward before learning (Brax's reward_scaling; applied before normalize_reward)."""

    # ---- derived values: computed, never stored -------------------------------------
    @property
    def batch_size(self) -> int:
        """Transitions per update: num_envs * num_steps."""
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.num_minibatches

    @property
    def num_sequences(self) -> int:
        """Policy gru: sequences per batch, num_envs * num_steps / seq_len (num_envs for whole rollouts)."""
        return self.num_envs * (self.num_steps // (self.seq_len or self.num_steps))

    @property
    def num_updates(self) -> int:
        return self.total_timesteps // self.batch_size

    def replace(self, **changes: Any) -> PPOConfig:
        unknown = sorted(set(changes) - set(self.__dataclass_fields__))
        if unknown:
            close = suggest(unknown[0], self.__dataclass_fields__)
            raise ConfigError(f"unknown config field(s) {', '.join(unknown)}{close}; accepted: "
                              f"{', '.join(self.__dataclass_fields__)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PPOConfig:
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ConfigError(f"unknown config field(s) {', '.join(unknown)}; accepted: {', '.join(names)}")
        kwargs = {}
        for k, v in data.items():
            if isinstance(v, list):
                v = tuple(v)
            kwargs[k] = v
        return cls(**kwargs)


def _jsonable(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


# The settings a run may change when it is resumed (the command line asks for --allow-safe-changes).
SAFE_RESUME_FIELDS = ("total_timesteps",)

# Float settings that are traced inputs of ``train``; their names match config fields.
HPARAM_FIELDS = (
    "lr",
    "adam_eps",
    "gamma",
    "gae_lambda",
    "clip_eps",
    "vf_clip_eps",
    "ent_coef",
    "vf_coef",
    "max_grad_norm",
    "kl_coef",
    "kl_target",
    "target_kl",
    "max_kl",
    "cg_damping",
    "backtrack_ratio",
)


@struct.dataclass
class HParams:
    """Float hyperparameters, passed to ``train`` as traced arrays (vmappable)."""

    lr: jnp.ndarray
    adam_eps: jnp.ndarray
    gamma: jnp.ndarray
    gae_lambda: jnp.ndarray
    clip_eps: jnp.ndarray
    vf_clip_eps: jnp.ndarray
    ent_coef: jnp.ndarray
    vf_coef: jnp.ndarray
    max_grad_norm: jnp.ndarray
    kl_coef: jnp.ndarray
    kl_target: jnp.ndarray
    target_kl: jnp.ndarray
    max_kl: jnp.ndarray
    cg_damping: jnp.ndarray
    backtrack_ratio: jnp.ndarray

    @classmethod
    def from_config(cls, config: PPOConfig) -> HParams:
        return cls(**{n: jnp.asarray(getattr(config, n), jnp.float32) for n in HPARAM_FIELDS})


def check_hparams(hparams: Any) -> None:
    """Check hyperparameters given to ``train`` in Python, as the config's fields are checked
    (:func:`validate_field`, every element of a stacked one). Values being traced (``train``
    under the caller's ``jit`` or ``vmap``) cannot be read and are passed over: nothing is added
    to the compiled program.

    Raises:
        ConfigError: ``"hparams.{name}: got {value}; accepted: ..."``.
    """
    if not isinstance(hparams, HParams):
        raise ConfigError(f"hparams: got a {type(hparams).__name__}; accepted: an HParams (HParams.from_config(config))")
    for name in HPARAM_FIELDS:
        value = getattr(hparams, name)
        if isinstance(value, jax.core.Tracer):
            continue
        try:
            values = np.asarray(value, np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise ConfigError(f"hparams.{name}: got {value!r}; accepted: a number or an array of numbers") from None
        for v in values:
            try:
                validate_field(name, float(v))
            except ConfigError as e:
                raise ConfigError(f"hparams.{e}") from None


def field_docs(cls: type = PPOConfig) -> dict[str, str]:
    """The docstring written under each dataclass field (used for ``--help``)."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    docs: dict[str, str] = {}
    for prev, node in zip(body, body[1:]):
        if (
            isinstance(prev, ast.AnnAssign)
            and isinstance(prev.target, ast.Name)
            and isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            docs[prev.target.id] = " ".join(node.value.value.split())
    return docs


# ---- validation ------------------------------------------------------------------------
# One rule per field: ``rule(value) -> None`` or the text of what would be accepted.
def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _positive_int(v: Any) -> str | None:
    return None if isinstance(v, int) and not isinstance(v, bool) and v > 0 else "a positive integer"


def _number(test: Callable[[float], bool], accepted: str) -> Callable[[Any], str | None]:
    return lambda v: None if _is_number(v) and test(v) else accepted


def _choice(options: tuple[str, ...]) -> Callable[[Any], str | None]:
    return lambda v: None if v in options else ", ".join(options)


def _widths(v: Any) -> str | None:
    ok = isinstance(v, tuple) and v and all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in v)
    return None if ok else "one or more positive layer widths, e.g. 64 64"


def _flag(v: Any) -> str | None:
    return None if isinstance(v, bool) else "true or false"


_POSITIVE = _number(lambda v: v > 0, "a number > 0")
_NON_NEGATIVE = _number(lambda v: v >= 0, "a number >= 0")
_UNIT = _number(lambda v: 0 <= v <= 1, "a number in [0, 1]")

RULES: dict[str, Callable[[Any], str | None]] = {
    "env": lambda v: None if isinstance(v, str) and v else "an environment name",
    "seed": lambda v: None if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63
    else "an integer from 0 to 2**63 - 1",
    **{n: _positive_int for n in ("total_timesteps", "num_envs", "num_steps", "num_minibatches", "update_epochs",
                                  "cg_iters", "backtrack_iters")},
    **{n: _POSITIVE for n in ("lr", "adam_eps", "max_grad_norm", "kl_target", "clip_obs", "clip_reward",
                              "reward_scale", "max_kl")},
    "cg_damping": _NON_NEGATIVE,
    "backtrack_ratio": _number(lambda v: 0 < v < 1, "a number in (0, 1)"),
    "algo": _choice(ALGOS),
    **{n: _NON_NEGATIVE for n in ("clip_eps", "vf_clip_eps", "ent_coef", "vf_coef", "kl_coef", "target_kl")},
    **{n: _UNIT for n in ("gamma", "gae_lambda")},
    "activation": _choice(ACTIVATIONS),
    "policy": _choice(POLICIES),
    "torso": _choice(TORSOS),
    "conv_channels": _widths,
    "reset_ratio": _positive_int,
    "action_dist": _choice(ACTION_DISTS),
    "gru_hidden": _positive_int,
    "seq_len": lambda v: None if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else "an integer >= 0",
    "kl_penalty": _choice(KL_PENALTIES),
    "actor_hidden": _widths,
    "critic_hidden": _widths,
    "log_std_init": _number(lambda v: True, "a number"),
    **{n: _flag for n in ("anneal_lr", "clip_vloss", "norm_adv", "recompute_advantages", "trajectory_minibatches",
                          "clip_per_network",
                          "bootstrap_truncation", "shared_torso", "clip_actions", "state_dependent_std",
                          "normalize_obs", "normalize_reward")},
}


def validate_field(name: str, value: Any) -> None:
    """Check one field's value (a swept value is checked this way).

    Raises:
        ConfigError: ``"{name}: got {value!r}; accepted: ..."``.
    """
    accepted = RULES[name](value)
    if accepted is not None:
        shape = getattr(value, "shape", None)
        if shape is not None and shape != ():  # an array: its repr spans lines
            raise ConfigError(f"{name}: got an array of shape {tuple(shape)}; accepted: {accepted}")
        if shape == () and not isinstance(value, (bool, int, float, str)):  # a NumPy or JAX scalar
            raise ConfigError(f"{name}: got {value!r}, not a Python value; accepted: {accepted}, as a Python number "
                              "(float(x) or int(x))")
        raise ConfigError(f"{name}: got {value!r}; accepted: {accepted}")


def check_integer(name: str, value: Any, low: int, accepted: str | None = None, none_ok: bool = False) -> None:
    """An integer (a Python or NumPy one, not a bool) of at least ``low`` (or None with ``none_ok``),
    else ``ConfigError("{name}: got {value!r}; accepted: {accepted}")``, by default "an integer >= low"."""
    if none_ok and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ConfigError(f"{name}: got {value!r}; accepted: {accepted or f'an integer >= {low}'}")


def validate(config: PPOConfig) -> PPOConfig:
    """Check ``config`` in plain Python before anything is traced: every field, then the
    fields that depend on each other. The environment-dependent checks run where the
    environment is built (:func:`validate_for_env`).

    Raises:
        ConfigError: one sentence naming the field, its value and what is accepted.
    """
    if not isinstance(config, PPOConfig):
        raise ConfigError(f"config: got a {type(config).__name__}; accepted: a PPOConfig (e.g. PPOConfig(env=...) or "
                          "preset(ENV))")
    for f in dataclasses.fields(config):
        validate_field(f.name, getattr(config, f.name))
    c = config
    if c.batch_size % c.num_minibatches:
        divisors = [d for d in range(1, min(c.batch_size, 64) + 1) if c.batch_size % d == 0]
        raise ConfigError(
            f"num_minibatches: {c.num_minibatches} does not divide the batch num_envs * num_steps = "
            f"{c.num_envs} * {c.num_steps} = {c.batch_size}; accepted: a divisor such as {', '.join(map(str, divisors))}"
        )
    if c.seq_len and c.policy != "gru":
        raise ConfigError(f"seq_len: got {c.seq_len}, but policy {c.policy} has no sequences; accepted: 0, or "
                          "policy gru")
    if c.policy == "gru" and c.seq_len and c.num_steps % c.seq_len:
        divisors = [d for d in range(1, c.num_steps + 1) if c.num_steps % d == 0]
        raise ConfigError(
            f"seq_len: {c.seq_len} does not divide num_steps = {c.num_steps}; accepted: 0 (whole rollouts) or a "
            f"divisor of num_steps such as {', '.join(map(str, divisors[:8]))}"
        )
    if c.policy == "gru" and c.num_sequences % c.num_minibatches:
        divisors = [d for d in range(1, c.num_sequences + 1) if c.num_sequences % d == 0]
        raise ConfigError(
            f"num_minibatches: {c.num_minibatches} does not divide the {c.num_sequences} sequences (num_envs = "
            f"{c.num_envs} x num_steps / seq_len = {c.num_steps // (c.seq_len or c.num_steps)}), and a recurrent "
            f"policy's minibatches are whole sequences; accepted: a divisor such as {', '.join(map(str, divisors[:8]))}"
        )
    if c.num_envs % c.reset_ratio:
        raise ConfigError(f"reset_ratio: {c.reset_ratio} does not divide num_envs {c.num_envs}; accepted: a divisor of "
                          "num_envs (1: every environment resets itself)")
    if c.policy == "gru" and c.shared_torso:
        raise ConfigError("shared_torso: got True, but policy gru already shares its GRU between actor and critic; "
                          "accepted: false with policy gru")
    if c.recompute_advantages and (c.policy != "mlp" or c.algo != "ppo"):
        raise ConfigError(f"recompute_advantages: got True with policy {c.policy} and algo {c.algo}; accepted: "
                          "policy mlp with algo ppo (a recurrent critic or TRPO's critic fit keeps the batch's "
                          "advantages)")
    if c.trajectory_minibatches and (c.policy != "mlp" or c.algo != "ppo"):
        raise ConfigError(f"trajectory_minibatches: got True with policy {c.policy} and algo {c.algo}; accepted: "
                          "policy mlp with algo ppo (a recurrent policy's minibatches are whole sequences already)")
    if c.trajectory_minibatches and c.num_envs % c.num_minibatches:
        divisors = [d for d in range(1, c.num_envs + 1) if c.num_envs % d == 0]
        raise ConfigError(f"num_minibatches: {c.num_minibatches} does not divide num_envs = {c.num_envs}, and "
                          "trajectory_minibatches cuts minibatches of whole environments' trajectories; accepted: a "
                          f"divisor such as {', '.join(map(str, divisors[:8]))}")
    if c.algo == "trpo" and c.kl_penalty != "off":
        raise ConfigError(f"kl_penalty: got {c.kl_penalty!r}, but algo trpo keeps each step within max_kl instead of "
                          "a penalty; accepted: off with algo trpo")
    if c.total_timesteps < c.batch_size:
        raise ConfigError(
            f"total_timesteps: {c.total_timesteps} is less than one batch of num_envs * num_steps = {c.batch_size}; "
            f"accepted: at least {c.batch_size}"
        )
    _check_counts(c)
    return config


INT32_MAX = 2**31 - 1


def _check_counts(c: PPOConfig) -> None:
    """The counts a compiled program holds as int32 (the batch's indices, the update counter, the
    optimiser's step count) fit in it: past 2**31 - 1 they would wrap around, or a chunk size
    search over them would not end."""
    steps = c.num_updates * c.update_epochs * c.num_minibatches
    for what, value, accepted in (
        (f"num_envs x num_steps = {c.batch_size} transitions per update", c.batch_size,
         f"num_envs x num_steps <= {INT32_MAX}"),
        (f"total_timesteps {c.total_timesteps} is {c.num_updates} updates", c.num_updates,
         f"total_timesteps <= {INT32_MAX * c.batch_size}"),
        (f"{c.num_updates} updates x {c.update_epochs} epochs x {c.num_minibatches} minibatches = {steps} optimiser "
         "steps", steps, f"total_timesteps <= {INT32_MAX // (c.update_epochs * c.num_minibatches) * c.batch_size}"),
    ):
        if value > INT32_MAX:
            raise ConfigError(f"{what}, more than 2**31 - 1 = {INT32_MAX}, the largest count a compiled program "
                              f"holds (int32); accepted: {accepted}")


def validate_for_env(config: PPOConfig, env: Any) -> None:
    """The settings that depend on the environment (``env``: the adapted environment): a cnn torso
    needs an image-like observation; some settings only continuous action spaces accept."""
    if config.torso == "cnn" and len(env.obs_shape) not in (2, 3):
        raise ConfigError(f"torso: got 'cnn', but {config.env}'s observation has shape {list(env.obs_shape)}; "
                          "accepted: mlp, or cnn for observations of shape [H, W] or [H, W, C]")
    if env.action_kind == "continuous":
        return
    default = PPOConfig()
    if config.log_std_init != default.log_std_init:
        raise ConfigError(
            f"log_std_init: got {config.log_std_init!r}, but {config.env} has a discrete action space "
            f"({env.num_actions} actions); accepted: only for continuous action spaces"
        )
    for name in ("clip_actions", "action_dist", "state_dependent_std"):
        if getattr(config, name) != getattr(default, name):
            raise ConfigError(
                f"{name}: got {getattr(config, name)!r}, but {config.env} has a discrete action space; "
                "accepted: only for continuous action spaces"
            )


def check_sweepable(name: str, where: str = "grid") -> None:
    """Only the float hyperparameters of :class:`HParams` can be swept (they are traced)."""
    if name in HPARAM_FIELDS:
        return
    static = name in PPOConfig.__dataclass_fields__
    what = "is a static setting (it changes the compiled program)" if static else "is not a config field"
    raise ConfigError(f"{where}: {name} {what}; fields that can be swept: {', '.join(HPARAM_FIELDS)}")


__all__ = [
    "ConfigError",
    "HParams",
    "HPARAM_FIELDS",
    "PPOConfig",
    "RULES",
    "check_sweepable",
    "field_docs",
    "suggest",
    "validate",
    "validate_field",
    "validate_for_env",
]
