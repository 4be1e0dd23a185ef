"""How the compiled program is laid out on each backend: choices that change speed, not the algorithm.

The same PPO can be written in ways that cost very differently on a CPU and on a GPU:

* ``truncation``: where the critic's value of a time-limited episode's final observation is
  computed. ``"branch"`` evaluates it inside the rollout, only on steps where some
  environment was truncated (a ``lax.cond``; truncations are rare, so on a CPU it is nearly
  free). ``"batched"`` keeps the final observations in the trajectory and evaluates the
  critic on all of them in the batched value pass, with no branch: on a GPU a conditional
  inside a loop stalls the device every step. ``"compact"`` keeps them too, and values only
  the truncated steps' final observations after the rollout (a few passes of ``N`` rows
  instead of one of ``T * N``).
* ``early_stop``: how epochs after a ``target_kl`` stop are skipped. ``"branch"`` skips their
  work with a ``lax.cond``; ``"select"`` runs them and keeps the previous parameters.
* ``shuffle``: ``"packed"`` sorts packed 32-bit words (:mod:`purejaxppo.core.shuffle`, several
  times faster than a key-value sort on a CPU); ``"sort"`` is ``jax.random.permutation``;
  ``"feistel"`` computes every row's place with a keyed bijection, no sort
  (:func:`purejaxppo.core.shuffle.feistel_permutation`).
* ``gather``: ``"epoch"`` gathers the whole shuffled batch before an epoch's minibatch steps;
  ``"minibatch"`` lets each step gather its own rows (no shuffled copy of the batch).
* ``rollout_unroll``, ``gae_unroll``, ``minibatch_unroll``: how many iterations of the
  rollout, advantage and minibatch loops one loop iteration of the program does.
* ``episode_stats``: ``"step"`` sums the returns of the episodes that end at each step as the
  rollout goes; ``"env"`` accumulates per environment and sums once at the end (no
  reduction inside the loop).
* ``weight_grad``: how a dense layer's weight gradient ``x^T g`` (a product over the minibatch
  rows) is computed: ``"dot"`` is JAX's own product with the transposed input folded in;
  ``"transposed"`` transposes the input explicitly first
  (:func:`purejaxppo.core.networks.transposed_weight_grad`), which XLA's CPU backend runs much
  faster. The feed-forward actor-critic only; the recurrent policy keeps ``"dot"``.
* ``precision``: ``"float32"`` everywhere, or ``"bfloat16"`` mixed precision: the dense (and
  convolution) layers' inputs, matrix products and activations in bfloat16, while the parameters,
  their gradients, the optimiser's state, the policy's logits (or Gaussian parameters), values,
  losses and advantages stay float32 (:class:`purejaxppo.core.networks.MixedPrecision`). It halves
  the bytes a wide minibatch moves through the network; it changes the numbers (bfloat16 keeps 8
  bits of mantissa), so it is never a default. ``"bfloat16_products"`` rounds only the dense
  layers' operands to bfloat16: each product accumulates and returns float32, the activations
  and the convolutions stay float32 (:func:`purejaxppo.core.networks.bfloat16_products`); it is
  the one to take where products dominate on hardware with bfloat16 matrix units (a CPU with
  Intel AMX, tensor cores); its weight gradients follow ``weight_grad`` too. The feed-forward actor-critic only;
  the recurrent policy stays float32.
* ``conv``: the convolution torso's layers: ``"lax"``, JAX's own convolution; ``"shifted"``, the
  k x k shifted copies of the padded input joined and multiplied by the flattened kernel in one
  product (:func:`purejaxppo.core.networks.shifted_conv`), whose gradient XLA's CPU backend runs
  some 30 times faster inside the minibatch loop.
* ``resets``: each environment's automatic reset when its episode ends. ``"all"`` computes every
  environment's reset state at every step and keeps the ended ones' (gymnax's own step);
  ``"ended"`` computes reset states only for the environments whose episode ended, from the same
  keys, in passes of ``N / 16`` (none at a step where no episode ended;
  :func:`purejaxppo.envs.vector.ended_resets`). Where a reset costs far more than a step it saves
  nearly all of it: Craftax builds a world per reset (on the CPU its vector step at 256
  environments went from 533 to 34 ms), MJX solves the model's starting state; where a reset is
  as cheap as a step the passes cost more than they save (CartPole trained 14% slower).
  ``"env"`` (the default) takes ``"ended"`` for the environments whose reset is marked costly
  (``costly_reset``: Craftax, MuJoCo Playground, Brax's mjx backend, or your own environment
  class with ``costly_reset = True``) and ``"all"`` for the rest. With ``reset_ratio`` > 1 the
  optimistic resets take over either way.

Every choice gives the same algorithm and the same metrics up to float rounding, except
``shuffle``, which draws different (equally uniform) permutations, and ``precision``'s
``"bfloat16"`` and ``"bfloat16_products"``, whose rounding is coarser. The defaults per backend
are the fastest measured (``experiments/benchmark_speed.py``, docs/speed.md). The
environment variable ``PUREJAXPPO_TUNING`` overrides them, e.g.
``PUREJAXPPO_TUNING="truncation=batched,gae_unroll=16"``; the variable is read when a
program is built.
"""

from __future__ import annotations

import dataclasses
import os

from purejaxppo.errors import ConfigError

ENV_VAR = "PUREJAXPPO_TUNING"


@dataclasses.dataclass(frozen=True)
class Tuning:
    truncation: str = "branch"  # branch | batched | compact
    early_stop: str = "branch"  # branch | select
    shuffle: str = "packed"  # packed | sort | feistel
    gather: str = "epoch"  # epoch | minibatch
    rollout_unroll: int = 1
    gae_unroll: int = 1
    minibatch_unroll: int = 1
    episode_stats: str = "step"  # step | env
    weight_grad: str = "dot"  # dot | transposed
    precision: str = "float32"  # float32 | bfloat16 (mixed: bfloat16 activations, float32 parameters) | bfloat16_products
    conv: str = "lax"  # lax | shifted
    resets: str = "env"  # env (ended where the environment marks its reset costly, else all) | all | ended

    def __post_init__(self):
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"tuning {name}: {getattr(self, name)!r} is not one of {', '.join(allowed)}")
        for name in _INTS:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"tuning {name}: must be an integer >= 1, got {value!r}")


_CHOICES = {
    "truncation": ("branch", "batched", "compact"),
    "early_stop": ("branch", "select"),
    "shuffle": ("packed", "sort", "feistel"),
    "gather": ("epoch", "minibatch"),
    "episode_stats": ("step", "env"),
    "weight_grad": ("dot", "transposed"),
    "precision": ("float32", "bfloat16", "bfloat16_products"),
    "conv": ("lax", "shifted"),
    "resets": ("env", "all", "ended"),
}
_INTS = ("rollout_unroll", "gae_unroll", "minibatch_unroll")

# The fastest choices measured on each backend (docs/speed.md). TPUs take the GPU's choices
# (the same reasons hold: loops and conditionals are costly on the device), unmeasured so far.
# ``Tuning()`` itself is the layout the reference runs were recorded with (tests/data).
_ACCELERATOR = Tuning(truncation="compact", early_stop="select", shuffle="feistel", gather="minibatch",
                      rollout_unroll=4, gae_unroll=16, episode_stats="env")
DEFAULTS = {"cpu": Tuning(shuffle="feistel", weight_grad="transposed", conv="shifted"), "gpu": _ACCELERATOR,
            "tpu": _ACCELERATOR}


def parse(text: str, base: Tuning) -> Tuning:
    """``"name=value,name=value"`` applied over ``base``; one-line errors for unknown names and values."""
    fields = {f.name for f in dataclasses.fields(Tuning)}
    changes: dict[str, object] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or name not in fields:
            raise ConfigError(
                f"{ENV_VAR}: {item!r} is not name=value with a name among {', '.join(sorted(fields))}"
            )
        if name in _INTS:
            try:
                changes[name] = int(value)
            except ValueError:
                raise ConfigError(f"{ENV_VAR}: {name} must be an integer >= 1, got {value!r}") from None
        else:
            changes[name] = value
    return dataclasses.replace(base, **changes)


def tuning_for(backend: str | None = None) -> Tuning:
    """The choices for ``backend`` (default: JAX's default backend), with ``PUREJAXPPO_TUNING`` applied."""
    if backend is None:
        import jax

        backend = jax.default_backend()
    base = DEFAULTS.get(backend, DEFAULTS["gpu"])  # other accelerators: as a GPU
    return parse(os.environ.get(ENV_VAR, ""), base)
