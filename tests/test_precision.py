"""Mixed precision as a program layout (``precision="bfloat16"``, purejaxppo/core/tuning.py): the dense
layers compute in bfloat16 while parameters, gradients, optimiser state and the heads' outputs stay
float32; the float32 layout is every backend's default and its network has no bfloat16 in it; a
bfloat16 CartPole run learns. ``precision="bfloat16_products"`` rounds only the dense products'
operands (forward and backward) and accumulates in float32: checked against NumPy on rounded
operands, and a CartPole run in it learns."""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxppo import PPOConfig
from purejaxppo.core.layout import make_layout
from purejaxppo.core.networks import (
    ActorCritic,
    MixedPrecision,
    bfloat16_products,
    bfloat16_products_dot_general,
    bfloat16_products_over_rows,
    bfloat16_products_over_rows_dot_general,
    make_network,
)
from purejaxppo.core.train import make_trainer
from purejaxppo.core.tuning import DEFAULTS, Tuning, parse, tuning_for
from purejaxppo.errors import ConfigError

BF16 = dataclasses.replace(tuning_for("cpu"), precision="bfloat16")
CARTPOLE = PPOConfig(env="CartPole-v1", num_envs=4, num_steps=128, num_minibatches=4, update_epochs=4,
                     total_timesteps=4 * 128 * 40)


def _dtypes(tree) -> set:
    return {str(x.dtype) for x in jax.tree_util.tree_leaves(tree) if hasattr(x, "dtype")}


def _eqn_dtypes(jaxpr, primitive: str) -> set:
    """The output dtypes of every ``primitive`` in a closed jaxpr, sub-jaxprs included."""
    found = set()
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == primitive:
            found |= {str(v.aval.dtype) for v in eqn.outvars}
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            found |= _eqn_dtypes(sub, primitive)
    return found


@pytest.fixture(scope="module")
def bf16_run():
    trainer = make_trainer(CARTPOLE, tuning=BF16)
    state, metrics = jax.jit(trainer.train)(jax.random.key(0))
    return trainer, state, metrics


def _rounded(x):
    """NumPy's float64 copy of ``x`` after rounding to bfloat16 (ml_dtypes' round to nearest even)."""
    import ml_dtypes

    return np.asarray(x, np.float32).astype(ml_dtypes.bfloat16).astype(np.float64)


@pytest.mark.parametrize("product", [bfloat16_products, bfloat16_products_over_rows], ids=["transposed", "over_rows"])
def test_bfloat16_products_round_the_operands_and_accumulate_in_float32(product):
    """The product and both gradients equal float64 NumPy products of the bfloat16-rounded
    operands (forward: x w; backward: g w^T and x^T g), up to float32 accumulation; each differs
    from the unrounded float32 product by far more than that tolerance. Both weight-gradient forms
    (an explicitly transposed x, the CPU's; a product over the rows, the accelerators')."""
    kx, kw, kg = jax.random.split(jax.random.key(3), 3)
    x, w = jax.random.normal(kx, (3, 40, 64)), jax.random.normal(kw, (64, 24)) / 8
    g = jax.random.normal(kg, (3, 40, 24))
    y, vjp = jax.vjp(product, x, w)
    dx, dw = vjp(g)
    assert y.dtype == dx.dtype == dw.dtype == jnp.float32 and dx.shape == x.shape and dw.shape == w.shape
    xr, wr, gr = _rounded(x), _rounded(w), _rounded(g)
    want = {"y": xr @ wr, "dx": gr @ wr.T, "dw": np.einsum("bri,bro->io", xr, gr)}
    exact = {"y": np.float64(x) @ np.float64(w), "dx": np.float64(g) @ np.float64(w).T,
             "dw": np.einsum("bri,bro->io", np.float64(x), np.float64(g))}
    for name, got in (("y", y), ("dx", dx), ("dw", dw)):
        np.testing.assert_allclose(got, want[name], rtol=1e-5, atol=1e-5, err_msg=name)
        assert np.max(np.abs(want[name] - exact[name])) > 100 * 1e-5, name  # the rounding is really there
    with pytest.raises(ValueError, match="only a dense layer's product"):
        bfloat16_products_dot_general(x, w, (((0,), (0,)), ((), ())))


@pytest.mark.parametrize("weight_grad", ["transposed", "dot"])
def test_bfloat16_products_layout_keeps_float32_everywhere_but_the_products_operands(weight_grad):
    """The layout's products follow its weight gradient (the CPU's ``transposed``, the accelerators'
    ``dot``, which makes no copy of x^T); every product has bfloat16 operands and a float32 result."""
    dot = make_layout(Tuning(precision="bfloat16_products", weight_grad=weight_grad)).dot_general
    assert dot is {"transposed": bfloat16_products_dot_general, "dot": bfloat16_products_over_rows_dot_general}[
        weight_grad]
    for backend, want in (("cpu", bfloat16_products_dot_general), ("gpu", bfloat16_products_over_rows_dot_general)):
        assert make_layout(dataclasses.replace(DEFAULTS[backend], precision="bfloat16_products")).dot_general is want
    obs = jax.random.normal(jax.random.key(1), (32, 5))
    net = ActorCritic(action_dim=2, continuous=True, state_dependent_std=True, dot_general=dot)
    params = net.init(jax.random.key(0), obs)

    def loss(p):
        pi, v = net.apply(p, obs)
        return sum(jnp.sum(x) for x in jax.tree_util.tree_leaves(pi)) + jnp.sum(v)

    jaxpr = jax.make_jaxpr(jax.grad(loss))(params)
    operands, outputs = set(), set()

    def visit(jaxpr):  # every product, forward and backward, sub-jaxprs included
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "dot_general":
                operands.update(str(v.aval.dtype) for v in eqn.invars)
                outputs.update(str(v.aval.dtype) for v in eqn.outvars)
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                visit(sub)

    visit(jaxpr.jaxpr)
    assert operands == {"bfloat16"} and outputs == {"float32"}
    assert bool(_eqn_dtypes(jaxpr.jaxpr, "transpose")) == (weight_grad == "transposed")
    assert _eqn_dtypes(jaxpr.jaxpr, "tanh") == {"float32"}  # activations stay float32
    assert _dtypes(params) == _dtypes(jax.grad(loss)(params)) == {"float32"}


def test_the_compiled_gradient_multiplies_bfloat16_operands():
    """What XLA compiles, not only what JAX traces: the CPU backend turns a bfloat16 product whose
    operand is a transpose (the weight gradient's ``x^T``) into a float32 one, three times slower
    there. Every product of the compiled gradient but matrix-vector ones (a one-column value head,
    which XLA computes in float32 itself) takes bfloat16 operands."""
    obs = jax.random.normal(jax.random.key(1), (256, 100))
    net = ActorCritic(action_dim=6, dot_general=bfloat16_products_dot_general)
    params = net.init(jax.random.key(0), obs)
    weights = jax.random.normal(jax.random.key(2), (256, 7))

    def loss(p, obs):
        pi, v = net.apply(p, obs)
        return jnp.sum(jnp.concatenate([pi, v[:, None]], axis=1) * weights)

    hlo = jax.jit(jax.grad(loss)).lower(params, obs).compile().as_text()
    types = dict(re.findall(r"%([\w.\-]+) = (\w+)\[", hlo))
    products = [(m.group(1), types[m.group(2)], types[m.group(3)])
                for m in re.finditer(r"= \w+\[([\d,]*)\]\S* dot\(%([\w.\-]+), %([\w.\-]+)\)", hlo)]
    assert len(products) >= 12  # six layers: forward and weight-gradient products at least
    matrix = [p for p in products if sum(int(d) > 1 for d in p[0].split(",") if d) == 2]
    upcast = [p for p in matrix if p[1:] != ("bf16", "bf16")]
    assert not upcast, upcast


def test_a_bfloat16_products_cartpole_run_learns():
    trainer = make_trainer(CARTPOLE, tuning=dataclasses.replace(tuning_for("cpu"), precision="bfloat16_products"))
    state, metrics = jax.jit(trainer.train)(jax.random.key(0))
    assert _dtypes(state.params) == {"float32"}
    returns = np.asarray(metrics["charts/episodic_return"])
    # float32 at this budget and seed: 77; random actions: about 22
    assert np.nanmean(returns[-5:]) > 50.0, returns


def test_the_choice_is_parsed_and_float32_is_every_default():
    assert parse("precision=bfloat16", Tuning()).precision == "bfloat16"
    with pytest.raises(ConfigError, match="tuning precision: 'float16' is not one of float32, bfloat16"):
        parse("precision=float16", Tuning())
    assert {t.precision for t in DEFAULTS.values()} == {"float32"}
    assert make_layout(Tuning()).dot_general is None  # float32: the network gets what it always got
    assert make_layout(BF16).dot_general == MixedPrecision(make_layout(tuning_for("cpu")).dot_general)


@pytest.mark.parametrize("continuous", [False, True])
def test_bfloat16_products_and_activations_with_float32_parameters_gradients_and_outputs(continuous):
    obs = jax.random.normal(jax.random.key(1), (32, 5))
    for dense, product in ((None, {"float32"}), (MixedPrecision(), {"bfloat16"})):
        net = ActorCritic(action_dim=2, continuous=continuous, state_dependent_std=continuous,
                          **dict(zip(("dot_general", "dtype"), (dense.dot_general, dense.dtype) if dense else (None, None))))
        params = net.init(jax.random.key(0), obs)
        assert _dtypes(params) == {"float32"}

        def loss(p):
            pi, v = net.apply(p, obs)
            assert _dtypes((pi, v)) == {"float32"}  # logits / Gaussian parameters and values
            return sum(jnp.sum(x) for x in jax.tree_util.tree_leaves(pi)) + jnp.sum(v)

        jaxpr = jax.make_jaxpr(jax.grad(loss))(params)
        assert _eqn_dtypes(jaxpr.jaxpr, "dot_general") == product  # forward and backward products
        assert _eqn_dtypes(jaxpr.jaxpr, "tanh") == product  # the hidden activations
        assert _dtypes(jax.grad(loss)(params)) == {"float32"}


def test_float32_network_is_unchanged_by_the_new_field():
    """The float32 network (dtype None) computes exactly what flax's default layers compute."""
    obs = jax.random.normal(jax.random.key(2), (8, 4))
    net, plain = ActorCritic(action_dim=2), ActorCritic(action_dim=2, dtype=None)
    params = net.init(jax.random.key(0), obs)
    for a, b in zip(jax.tree_util.tree_leaves(net.apply(params, obs)), jax.tree_util.tree_leaves(plain.apply(params, obs))):
        np.testing.assert_array_equal(a, b)


def test_a_bfloat16_cartpole_run_keeps_float32_state_and_learns(bf16_run):
    trainer, state, metrics = bf16_run
    assert isinstance(trainer.network, ActorCritic) and trainer.network.dtype == jnp.bfloat16
    assert _dtypes(state.params) == {"float32"}
    assert _dtypes(state.opt_state) <= {"float32", "int32"}  # Adam's moments float32, its count int32
    returns = np.asarray(metrics["charts/episodic_return"])
    assert np.all(np.isfinite(np.asarray(metrics["losses/value_loss"])))
    # float32 at this budget and seed: 77; random actions: about 22
    assert np.nanmean(returns[-5:]) > 50.0, returns


@pytest.mark.parametrize("conv", ["lax", "shifted"])
def test_the_convolution_torso_computes_in_bfloat16_too(conv):
    """JAX's convolution (accelerators) and the shifted copies' product (the CPU's layout)."""
    from purejaxppo.core.networks import CONVS
    from purejaxppo.envs import make_env

    env, _ = make_env("Breakout-MinAtar")
    config = PPOConfig(env="Breakout-MinAtar", torso="cnn", conv_channels=(4,), actor_hidden=(8,), critic_hidden=(8,))
    net = make_network(config, env, MixedPrecision(), CONVS[conv])
    obs = jnp.zeros((2, env.obs_dim))
    params = net.init(jax.random.key(0), obs)
    assert _dtypes(params) == {"float32"}
    jaxpr = jax.make_jaxpr(lambda p: net.apply(p, obs))(params)
    if conv == "lax":
        assert _eqn_dtypes(jaxpr.jaxpr, "conv_general_dilated") == {"bfloat16"}
    else:  # no convolution left: every product (convolutions' and dense layers') in bfloat16
        assert _eqn_dtypes(jaxpr.jaxpr, "conv_general_dilated") == set()
        assert _eqn_dtypes(jaxpr.jaxpr, "dot_general") == {"bfloat16"}
    assert _dtypes(net.apply(params, obs)) == {"float32"}
