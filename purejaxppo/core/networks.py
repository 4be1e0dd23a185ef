"""Actor-critic networks.

Separate actor and critic MLPs by default (orthogonal initialisation: gain sqrt(2) in
hidden layers, 0.01 on the policy head, 1 on the value head, as in the PPO
implementation details of Huang et al., 2022); a shared torso with two heads as an
option.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen import initializers
from flax.linen.initializers import constant

_ACTIVATIONS = {
    "tanh": nn.tanh,
    "relu": nn.relu,
    "gelu": nn.gelu,
    "silu": nn.silu,
    "elu": nn.elu,
}


def orthogonal(scale: float = 1.0):
    """Flax's orthogonal initialiser, made safe to ``vmap`` on the CPU.

    Orthogonal matrices come from a QR factorisation. Under ``vmap`` (seeds, sweeps) that
    becomes one batched LAPACK call, which XLA's CPU runtime splits over its intra-op
    thread pool while blocking a pool thread to wait for the pieces; two such calls
    running at once on a two-thread pool wait for each other for ever. Here a batch of
    initialisations runs as a ``lax.map`` of unbatched ones instead: the same numbers
    (bit for bit), no nested parallelism, and a negligible cost paid once per run.
    """
    base = initializers.orthogonal(scale)

    def init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
        @jax.custom_batching.custom_vmap
        def draw(key):
            return base(key, shape, dtype)

        @draw.def_vmap
        def draw_batched(axis_size, in_batched, key):
            if not in_batched[0]:
                return draw(key), False
            return jax.lax.map(draw, key), True

        return draw(key)

    return init


@jax.custom_vjp
def _dense_matmul(x: jax.Array, w: jax.Array) -> jax.Array:
    return jax.lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())))


def _dense_matmul_fwd(x, w):
    return _dense_matmul(x, w), (x, w)


def _dense_matmul_bwd(res, g):
    x, w = res
    dx = jax.lax.dot_general(g, w, (((g.ndim - 1,), (1,)), ((), ())))
    rows_x, rows_g = x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1])
    # The barrier keeps XLA from folding the transpose back into the product.
    dw = jax.lax.optimization_barrier(rows_x.T) @ rows_g
    return dx, dw


_dense_matmul.defvjp(_dense_matmul_fwd, _dense_matmul_bwd)


def transposed_weight_grad(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    """A dense layer's ``dot_general`` whose weight gradient multiplies an explicitly transposed
    copy of the layer's input (the ``weight_grad="transposed"`` program layout,
    :mod:`purejaxppo.core.tuning`).

    The forward pass and the input's gradient are the plain products. The weight gradient
    ``x^T g`` contracts over the batch rows; XLA's CPU backend runs that product, with its
    transposed left operand, several times slower than a plain one (a 64 x 2 policy head's:
    230 us against 95 us for 2,048 rows on a 2-core Xeon). Same values up to float rounding.
    """
    _dense_product_only("transposed_weight_grad", lhs, dimension_numbers, precision, preferred_element_type)
    return _dense_matmul(lhs, rhs)


def _dense_product_only(name: str, lhs, dimension_numbers, precision, preferred_element_type) -> None:
    """Refuse, in one line, any product but a dense layer's (the only one a layout's product replaces)."""
    if dimension_numbers != (((lhs.ndim - 1,), (0,)), ((), ())) or precision is not None or preferred_element_type:
        raise ValueError(f"{name}: only a dense layer's product (inputs [..., in] x kernel [in, out])")


def dense_dot_general(weight_grad: str):
    """The ``dot_general`` of the dense layers for a ``weight_grad`` layout (None: JAX's own); the
    program layout resolves it once (:mod:`purejaxppo.core.layout`)."""
    return transposed_weight_grad if weight_grad == "transposed" else None


def _bfloat16_products(transposed_x: bool):
    """:func:`bfloat16_products` (``transposed_x``, the ``"transposed"`` weight gradient) or
    :data:`bfloat16_products_over_rows` (the ``"dot"`` weight gradient), and its dense layer's
    ``dot_general``."""

    @jax.custom_vjp
    def product(x: jax.Array, w: jax.Array) -> jax.Array:
        """A dense layer's product ``x @ w`` from bfloat16 operands, accumulated and returned in
        float32 (the ``precision="bfloat16_products"`` layout, :mod:`purejaxppo.core.tuning`).

        The activations, the bias and everything outside the products stay float32; the layer's
        input is kept for the backward pass in bfloat16 (half the bytes). The backward pass's two
        products take bfloat16 operands too: ``dx = g w^T`` and ``dw = x^T g``. For ``dw``,
        :func:`bfloat16_products` multiplies an explicitly transposed ``x`` (the CPU's layout),
        stored row-major so that the compiled product stays bfloat16 (tests/test_precision.py);
        :data:`bfloat16_products_over_rows` contracts ``x`` over its rows (the accelerators'
        layout: their libraries take a transposed operand themselves). Processors with bfloat16
        matrix units (Intel AMX, GPU tensor cores) run such products several times faster than
        float32 ones: a [640, 256] x [256, 256] product takes 99 us against 301 us in float32 on a
        2-core Xeon with AMX (docs/speed.md).
        """
        return jax.lax.dot_general(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16),
                                   (((x.ndim - 1,), (0,)), ((), ())), preferred_element_type=jnp.float32)

    def fwd(x, w):
        # the operands' dtypes travel as empty arrays (a residual must be an array)
        return product(x, w), (x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), x[..., :0], w[:0])

    def bwd(res, g):
        xb, wb, x_kind, w_kind = res
        rows_x, rows_g = xb.reshape(-1, xb.shape[-1]), g.reshape(-1, g.shape[-1]).astype(jnp.bfloat16)
        dx = jax.lax.dot_general(rows_g, wb, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)
        if transposed_x:
            # x^T materialised row-major (through one dimension) before the barrier: a transposed
            # layout reaching the product makes XLA's CPU backend multiply in float32 (3x slower there).
            x_t = jax.lax.optimization_barrier(rows_x.T.reshape(-1)).reshape(rows_x.shape[::-1])
            dw = jax.lax.dot_general(x_t, rows_g, (((1,), (0,)), ((), ())), preferred_element_type=jnp.float32)
        else:
            dw = jax.lax.dot_general(rows_x, rows_g, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)
        return dx.reshape(xb.shape).astype(x_kind.dtype), dw.astype(w_kind.dtype)

    product.defvjp(fwd, bwd)

    def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
        """The bfloat16 product as a dense layer's ``dot_general``."""
        _dense_product_only("bfloat16_products", lhs, dimension_numbers, precision, preferred_element_type)
        return product(lhs, rhs)

    return product, dot_general


bfloat16_products, bfloat16_products_dot_general = _bfloat16_products(transposed_x=True)
bfloat16_products_over_rows, bfloat16_products_over_rows_dot_general = _bfloat16_products(transposed_x=False)


class MixedPrecision(NamedTuple):
    """The dense layers of a ``precision="bfloat16"`` layout (:mod:`purejaxppo.core.tuning`).

    Each layer casts its input and its float32 parameters to ``dtype`` and multiplies, adds the
    bias and applies the activation in ``dtype``: the activations kept for the backward pass are
    half the bytes. The parameters stay float32 (the cast's gradient is float32, so are the
    optimiser's moments), and the heads' outputs are cast back to float32 before the policy's
    distribution, the values, the losses and the advantages see them.
    """

    dot_general: Any = None  # the product inside (None: JAX's own), as for float32
    dtype: Any = jnp.bfloat16


def dense_layers(weight_grad: str, precision: str = "float32"):
    """What a layout gives the network for its dense layers: the ``dot_general`` for ``weight_grad``
    (:func:`dense_dot_general`), wrapped in a :class:`MixedPrecision` for ``precision="bfloat16"``;
    for ``precision="bfloat16_products"`` the bfloat16 product whose own weight gradient follows
    ``weight_grad`` (:func:`bfloat16_products`)."""
    return DENSE_LAYERS[precision](dense_dot_general(weight_grad))


DENSE_LAYERS = {  # precision -> (the weight_grad layout's dot_general -> the dense layers)
    "float32": lambda dot: dot,
    "bfloat16": MixedPrecision,
    "bfloat16_products": lambda dot: (bfloat16_products_dot_general if dot is transposed_weight_grad
                                      else bfloat16_products_over_rows_dot_general),
}


def split_dense(dense: Any) -> tuple[Any, Any]:
    """``(dot_general, dtype)`` of a layout's dense layers (dtype None: float32, flax's default)."""
    if isinstance(dense, MixedPrecision):
        return dense.dot_general, dense.dtype
    return dense, None


class MLP(nn.Module):
    """Hidden layers only: ``[..., in] -> [..., hidden[-1]]``."""

    hidden: Sequence[int]
    activation: str = "tanh"
    dot_general: Any = None  # the layers' product (core/layout.py); None: JAX's own
    dtype: Any = None  # the layers' computation dtype (None: float32; bfloat16 for mixed precision)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = _ACTIVATIONS[self.activation]
        for width in self.hidden:
            x = act(nn.Dense(width, kernel_init=orthogonal(math.sqrt(2)), bias_init=constant(0.0),
                             dot_general=self.dot_general, dtype=self.dtype)(x))
        return x


def shifted_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
                 feature_group_count=1, precision=None, preferred_element_type=None):
    """A SAME, stride-1 convolution of ``lhs [N, H, W, C]`` with ``rhs [k, k, C, F]`` (k odd) as one
    matrix product: the k x k shifted copies of the zero-padded input joined along the channels
    (``[N, H, W, k k C]``), times the kernel flattened to ``[k k C, F]``; the ``conv="shifted"``
    layout's convolution (:mod:`purejaxppo.core.tuning`), given to flax's ``nn.Conv`` in place of
    ``lax.conv_general_dilated``. The same sums in another order. Its gradients are slices, pads
    and products: XLA's CPU backend runs a convolution's gradient inside a loop (a PPO epoch's
    minibatch scan) some 30 times slower than this (docs/speed.md)."""
    k = rhs.shape[0]
    if (lhs.ndim != 4 or rhs.ndim != 4 or rhs.shape[1] != k or k % 2 == 0 or tuple(window_strides) != (1, 1)
            or any(d not in (None, 1, (1, 1)) for d in (lhs_dilation, rhs_dilation)) or feature_group_count != 1
            or padding not in ("SAME", [(k // 2, k // 2)] * 2, ((k // 2, k // 2),) * 2)
            or preferred_element_type is not None or not _channels_last(lhs, rhs, dimension_numbers)):
        raise ValueError("shifted_conv: only a SAME, stride-1, odd square kernel over [N, H, W, C] inputs and "
                         "[k, k, C, F] kernels (NHWC, HWIO, NHWC), in the inputs' dtype")
    n, h, w, _ = lhs.shape
    half = k // 2
    padded = jnp.pad(lhs, ((0, 0), (half, half), (half, half), (0, 0)))
    patches = jnp.concatenate([padded[:, i:i + h, j:j + w, :] for i in range(k) for j in range(k)], axis=-1)
    return jnp.dot(patches, rhs.reshape(-1, rhs.shape[-1]), precision=precision)


def _channels_last(lhs, rhs, dimension_numbers) -> bool:
    """Whether ``dimension_numbers`` lay the convolution out as flax does: NHWC inputs and outputs,
    HWIO kernels (``None`` means NCHW, ``lax.conv_general_dilated``'s default)."""
    if dimension_numbers is None:
        return False
    nhwc = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC"))
    if not isinstance(dimension_numbers, jax.lax.ConvDimensionNumbers):
        dimension_numbers = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, tuple(dimension_numbers))
    return dimension_numbers == nhwc


CONVS = {"lax": None, "shifted": shifted_conv}  # the conv layout choice -> nn.Conv's conv_general_dilated


class ConvTorso(nn.Module):
    """3x3 convolutions (stride 1, SAME padding, relu) over an image-like observation, flattened:
    ``[..., H * W * C] -> [..., H * W * channels[-1]]``. The observation arrives flat (as every
    policy sees it) and is reshaped to ``image_shape`` ([H, W, C]) here."""

    image_shape: tuple[int, ...]
    channels: Sequence[int] = (16, 32)
    dtype: Any = None  # computation dtype (None: float32)
    conv: Any = None  # the layout's convolution (:data:`CONVS`); None: lax.conv_general_dilated

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        batch = x.shape[:-1]
        assert x.shape[-1] == math.prod(self.image_shape), (x.shape, self.image_shape)
        x = x.reshape((-1, *self.image_shape))
        for c in self.channels:
            x = nn.relu(nn.Conv(c, (3, 3), padding="SAME", kernel_init=orthogonal(math.sqrt(2)),
                                bias_init=constant(0.0), dtype=self.dtype, conv_general_dilated=self.conv)(x))
        return x.reshape((*batch, -1))


def image_shape(obs_shape: Sequence[int]) -> tuple[int, ...]:
    """An observation's shape as an image's ``[H, W, C]`` (``[H, W]`` gets one channel)."""
    return tuple(obs_shape) if len(obs_shape) == 3 else (*obs_shape, 1)


def torso(hidden: Sequence[int], activation: str, dot_general: Any, conv: Any, dtype: Any = None) -> nn.Module:
    """The MLP, after the convolutions when ``conv`` (a :class:`ConvTorso`) is given."""
    mlp = MLP(tuple(hidden), activation, dot_general, dtype)
    return mlp if conv is None else nn.Sequential([conv, mlp])


MIN_STD = 1e-3  # floor of a state-dependent standard deviation (Brax's NormalTanhDistribution uses the same)


def policy_head_width(action_dim: int, continuous: bool, state_dependent_std: bool) -> int:
    """Outputs of the policy head: logits, a Gaussian's means, or its means and scales."""
    return action_dim * 2 if continuous and state_dependent_std else action_dim


def gaussian_params(out: jax.Array, log_std: jax.Array | None, log_std_init: float) -> tuple[jax.Array, jax.Array]:
    """``(mean, log_std)`` of a Gaussian policy from its head's output.

    With a learned vector ``log_std`` (state-independent) the head gives the means. Without
    one (``state_dependent_std``) it gives means and raw scales, ``sigma = softplus(raw + c) +
    MIN_STD``, with ``c`` chosen so that a zero output (the head starts near zero) gives
    ``sigma = exp(log_std_init)``: the softplus keeps sigma positive and smooth, the floor
    keeps the log-probability finite.
    """
    if log_std is not None:
        return out, jnp.broadcast_to(log_std, out.shape)
    mean, raw = jnp.split(out, 2, axis=-1)
    shift = math.log(math.expm1(max(math.exp(log_std_init) - MIN_STD, 1e-6)))
    return mean, jnp.log(jax.nn.softplus(raw + shift) + MIN_STD)


class ActorCritic(nn.Module):
    """Policy and value function.

    ``policy(obs)`` returns the distribution parameters: logits ``[..., A]`` for discrete
    actions, or ``(mean [..., D], log_std [..., D])`` for a diagonal Gaussian (its log-std a
    learned vector, or a function of the observation with ``state_dependent_std``).
    ``value(obs)`` returns ``[...]``.
    """

    action_dim: int
    continuous: bool = False
    actor_hidden: Sequence[int] = (64, 64)
    critic_hidden: Sequence[int] = (64, 64)
    activation: str = "tanh"
    shared_torso: bool = False
    log_std_init: float = 0.0
    state_dependent_std: bool = False
    dot_general: Any = None  # the dense layers' product (core/layout.py); None: JAX's own
    dtype: Any = None  # the layers' computation dtype (None: float32); outputs are float32 either way
    image_shape: tuple[int, ...] = ()  # with conv_channels: the observation as an image [H, W, C]
    conv_channels: tuple[int, ...] = ()  # channels of the convolutions before the MLPs (none: an MLP alone)
    conv: Any = None  # the layout's convolution (CONVS); None: lax.conv_general_dilated

    def setup(self):
        def conv():
            return ConvTorso(self.image_shape, self.conv_channels, self.dtype, self.conv) if self.conv_channels else None

        dot, dtype = self.dot_general, self.dtype
        self.actor_torso = torso(self.actor_hidden, self.activation, dot, conv(), dtype)
        if not self.shared_torso:
            self.critic_torso = torso(self.critic_hidden, self.activation, dot, conv(), dtype)
        width = policy_head_width(self.action_dim, self.continuous, self.state_dependent_std)
        self.policy_head = nn.Dense(width, kernel_init=orthogonal(0.01), bias_init=constant(0.0), dot_general=dot,
                                    dtype=dtype)
        self.value_head = nn.Dense(1, kernel_init=orthogonal(1.0), bias_init=constant(0.0), dot_general=dot,
                                   dtype=dtype)
        if self.continuous and not self.state_dependent_std:
            self.log_std = self.param("log_std", constant(self.log_std_init), (self.action_dim,))

    def policy(self, obs: jax.Array):
        out = self._float32(self.policy_head(self.actor_torso(obs)))
        if self.continuous:
            return gaussian_params(out, None if self.state_dependent_std else self.log_std, self.log_std_init)
        return out

    def value(self, obs: jax.Array) -> jax.Array:
        torso = self.actor_torso if self.shared_torso else self.critic_torso
        return self._float32(self.value_head(torso(obs)))[..., 0]

    def _float32(self, out: jax.Array) -> jax.Array:
        """A head's output as float32 (mixed precision computes it in bfloat16; float32 is left alone)."""
        return out if self.dtype is None else out.astype(jnp.float32)

    def __call__(self, obs: jax.Array):
        return self.policy(obs), self.value(obs)


def make_network(config, env, dot_general: Any = None, conv: Any = None) -> ActorCritic:
    """The actor-critic for ``config`` and the adapted environment ``env``; ``dot_general`` is the
    program layout's dense layers (:mod:`purejaxppo.core.layout`): their product, or a
    :class:`MixedPrecision` holding it; ``conv`` its convolution (None: JAX's own)."""
    dot_general, dtype = split_dense(dot_general)
    continuous = env.action_kind == "continuous"
    return ActorCritic(
        action_dim=env.action_dim if continuous else env.num_actions,
        continuous=continuous,
        actor_hidden=tuple(config.actor_hidden),
        critic_hidden=tuple(config.critic_hidden),
        activation=config.activation,
        shared_torso=config.shared_torso,
        log_std_init=config.log_std_init,
        state_dependent_std=config.state_dependent_std,
        dot_general=dot_general,
        dtype=dtype,
        **conv_settings(config, env, conv),
    )


def conv_settings(config, env, conv: Any = None) -> dict[str, Any]:
    """The network's convolution fields: none for the mlp torso."""
    if config.torso != "cnn":
        return {}
    return {"image_shape": image_shape(env.obs_shape), "conv_channels": tuple(config.conv_channels), "conv": conv}
