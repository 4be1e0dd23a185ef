"""What the environment suites need from the learner: factored categoricals for multi-discrete
actions, action masks (acting, loss, evaluation), a convolutional torso, optimistic resets.

Pure pieces against NumPy (enumeration of every joint action, a loop convolution); the learner
on a probe whose best allowed action is known and whose forbidden one pays more.
"""

import dataclasses
import itertools

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_rollout

from purejaxppo import HParams, PPOConfig, make_train
from purejaxppo.core.distributions import Categorical, FactoredCategorical, mask_logits
from purejaxppo.core.layout import make_layout
from purejaxppo.core.networks import CONVS, ConvTorso, shifted_conv
from purejaxppo.core.train import init_state, make_parts, make_trainer
from purejaxppo.core.tuning import DEFAULTS
from purejaxppo.envs import make_env
from purejaxppo.envs.vector import make_vector_step
from purejaxppo.errors import ConfigError
from purejaxppo.run.evaluate import make_evaluate


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_factored_categorical_against_enumerating_every_joint_action():
    nvec = (2, 3, 4)
    dist = FactoredCategorical(nvec)
    logits = np.random.default_rng(0).normal(size=(sum(nvec),)).astype(np.float32)
    parts = np.split(logits, np.cumsum(nvec)[:-1])
    joint = {a: sum(log_softmax(p)[i] for p, i in zip(parts, a)) for a in itertools.product(*map(range, nvec))}
    assert np.isclose(sum(np.exp(v) for v in joint.values()), 1.0, atol=1e-6)
    actions = list(joint)
    got = np.asarray(jax.vmap(lambda a: dist.log_prob(jnp.asarray(logits), a))(jnp.asarray(actions)))
    np.testing.assert_allclose(got, [joint[a] for a in actions], atol=1e-5)
    entropy = -sum(np.exp(v) * v for v in joint.values())
    assert float(dist.entropy(jnp.asarray(logits))) == pytest.approx(entropy, abs=1e-5)
    assert tuple(np.asarray(dist.mode(jnp.asarray(logits)))) == max(joint, key=joint.get)
    keys = jax.random.split(jax.random.key(1), 20000)
    draws = np.asarray(jax.vmap(lambda k: dist.sample(k, jnp.asarray(logits)))(keys))
    assert draws.shape == (20000, 3) and draws.dtype == np.int32
    freq = {a: np.mean(np.all(draws == a, axis=1)) for a in joint}
    for a, lp in joint.items():  # every joint action at its probability (binomial sd <= 0.0036)
        assert abs(freq[a] - np.exp(lp)) < 0.015, (a, freq[a], np.exp(lp))


def test_a_mask_renormalises_over_the_allowed_actions_and_is_never_sampled():
    logits = jnp.array([[2.0, 0.5, -1.0, 0.3], [0.0, 0.0, 0.0, 0.0]])
    mask = jnp.array([[False, True, True, False], [True, False, False, False]])
    masked = mask_logits(logits, mask)
    for row in range(2):
        allowed = np.asarray(mask[row])
        expected = log_softmax(np.asarray(logits[row])[allowed])
        got = np.asarray(Categorical.log_prob(masked[row][None].repeat(allowed.sum(), 0), jnp.flatnonzero(allowed)))
        np.testing.assert_allclose(got, expected, atol=1e-6)
        p = np.exp(expected)
        assert float(Categorical.entropy(masked[row])) == pytest.approx(-(p * np.log(p)).sum(), abs=1e-6)
    draws = np.asarray(jax.vmap(lambda k: Categorical.sample(k, masked))(jax.random.split(jax.random.key(0), 5000)))
    assert set(draws[:, 0]) == {1, 2} and set(draws[:, 1]) == {0}
    assert mask_logits(logits, None) is logits


@pytest.fixture(scope="module", params=["mlp", "gru"])
def masked_factors(request):
    """One compiled program per policy: a training run, a rollout of the untrained policy, and an
    evaluation of the trained one."""
    config = PPOConfig(env="Probe-MaskedFactors", num_envs=16, num_steps=8, total_timesteps=16 * 8 * 30, lr=3e-3,
                       ent_coef=0.0, policy=request.param, gru_hidden=16)
    parts, evaluate = make_parts(config), make_evaluate(make_trainer(config), 16, deterministic=False)

    def everything(key):
        state, metrics = make_train(config)(key)
        untrained = init_state(parts, jax.random.key(2), HParams.from_config(config))
        traj = parts.policy.collect(parts, untrained, jax.random.key(5))[1]
        traj = traj if hasattr(traj, "action") else traj[0]  # the recurrent rollout carries its first hidden state
        return metrics, traj, evaluate(state, jax.random.key(3))

    return jax.jit(everything)(jax.random.key(0))


def test_masked_multi_discrete_probe_learns_the_best_allowed_action(masked_factors):
    metrics, _, scores = masked_factors
    returns = np.asarray(metrics["charts/episodic_return"])
    # uniform over the allowed choices pays 0.5; the best allowed action 1; a forbidden choice more
    assert returns[0] == pytest.approx(0.5, abs=0.1)
    assert returns[-5:].min() > 0.97 and returns.max() <= 1.0
    assert np.all(np.asarray(scores) <= 1.0) and np.mean(np.asarray(scores)) > 0.97


def test_a_rollout_never_takes_a_masked_action_and_records_the_masked_log_prob(masked_factors):
    _, traj, _ = masked_factors
    actions, mask = np.asarray(traj.action), np.asarray(traj.mask)
    assert actions.shape == (8, 16, 2) and mask.shape == (8, 16, 6)
    assert np.all(actions >= 1)  # choice 0 is ruled out in both factors
    assert np.allclose(np.asarray(traj.log_prob), np.log(0.25), atol=0.3)  # near uniform over 2 x 2 allowed


@pytest.mark.parametrize("conv", ["lax", "shifted"])
def test_conv_torso_against_a_numpy_loop(conv):
    torso = ConvTorso((5, 4, 2), channels=(3,), conv=CONVS[conv])
    x = jax.random.normal(jax.random.key(0), (2, 40))
    params = torso.init(jax.random.key(1), x)
    kernel = np.asarray(params["params"]["Conv_0"]["kernel"])  # [3, 3, 2, 3]: the same tree for either layout
    bias = np.asarray(params["params"]["Conv_0"]["bias"])
    image = np.pad(np.asarray(x).reshape(2, 5, 4, 2), ((0, 0), (1, 1), (1, 1), (0, 0)))
    expected = np.zeros((2, 5, 4, 3), np.float32)
    for b, i, j in itertools.product(range(2), range(5), range(4)):
        expected[b, i, j] = np.einsum("hwc,hwco->o", image[b, i:i + 3, j:j + 3], kernel) + bias
    got = np.asarray(torso.apply(params, x))
    np.testing.assert_allclose(got, np.maximum(expected, 0).reshape(2, -1), rtol=1e-5, atol=1e-5)
    assert torso.apply(params, x[None]).shape == (1, 2, 60)  # any leading axes


def test_shifted_convolution_has_the_gradients_of_jax_s_own():
    """The ``conv="shifted"`` layout (CPU's default): values and gradients of a two-layer torso as
    with ``lax.conv_general_dilated``, to float rounding."""
    x = jax.random.normal(jax.random.key(0), (6, 7 * 5 * 3))
    lax_torso, shifted = ConvTorso((7, 5, 3), (4, 2)), ConvTorso((7, 5, 3), (4, 2), conv=shifted_conv)
    params = lax_torso.init(jax.random.key(1), x)

    def loss(torso):
        return lambda p, x: jnp.sum(jnp.sin(torso.apply(p, x)))

    want = jax.grad(loss(lax_torso), argnums=(0, 1))(params, x)
    got = jax.grad(loss(shifted), argnums=(0, 1))(params, x)
    for a, b in zip(jax.tree_util.tree_leaves(want), jax.tree_util.tree_leaves(got)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(shifted.apply(params, x), lax_torso.apply(params, x), rtol=1e-5, atol=1e-5)
    assert make_layout(DEFAULTS["cpu"]).conv is shifted_conv and make_layout(DEFAULTS["gpu"]).conv is None


@pytest.mark.parametrize("k", [1, 5])
def test_shifted_convolution_of_other_kernel_sizes_and_what_it_refuses(k):
    """Called as ``lax.conv_general_dilated`` is (channels last): 1 x 1 and 5 x 5 kernels give JAX's
    values and gradients; any other layout, stride, padding, dilation or grouping is refused in one line."""
    x, w = jax.random.normal(jax.random.key(2), (2, 6, 5, 3)), jax.random.normal(jax.random.key(3), (k, k, 3, 4))
    nhwc = ("NHWC", "HWIO", "NHWC")

    def loss(conv):
        return lambda x, w: jnp.sum(jnp.sin(conv(x, w, (1, 1), "SAME", dimension_numbers=nhwc)))

    for a, b in zip(jax.grad(loss(jax.lax.conv_general_dilated), (0, 1))(x, w), jax.grad(loss(shifted_conv), (0, 1))(x, w)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)
    for args, kwargs in [(((2, 2), "SAME"), {"dimension_numbers": nhwc}),  # stride 2
                         (((1, 1), "SAME"), {}),  # no dimension numbers: lax's default is NCHW
                         (((1, 1), "SAME"), {"dimension_numbers": ("NCHW", "OIHW", "NCHW")}),
                         (((1, 1), "VALID"), {"dimension_numbers": nhwc}),
                         (((1, 1), "SAME"), {"dimension_numbers": nhwc, "rhs_dilation": (2, 2)}),
                         (((1, 1), "SAME"), {"dimension_numbers": nhwc, "preferred_element_type": jnp.float32})]:
        with pytest.raises(ValueError, match=r"^shifted_conv: only a SAME, stride-1, odd square kernel"):
            shifted_conv(x, w, *args, **kwargs)
    with pytest.raises(ValueError, match="only a SAME"):  # an even kernel
        shifted_conv(x, jnp.zeros((2, 2, 3, 4)), (1, 1), "SAME", dimension_numbers=nhwc)


def _primitives(jaxpr) -> set:
    """The names of the primitives in a jaxpr, sub-jaxprs included."""
    found = set()
    for eqn in jaxpr.eqns:
        found.add(eqn.primitive.name)
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            found |= _primitives(sub)
    return found


def test_cnn_torso_builds_the_whole_program_on_minatar_and_bad_settings_are_one_line():
    # the whole training program traced at MinAtar's [10, 10, 4] observation (its numbers are checked where the
    # torso learns: tests/test_suites.py's Navix room)
    config = PPOConfig(env="Breakout-MinAtar", torso="cnn", conv_channels=(8,), num_envs=8, num_steps=16,
                       total_timesteps=8 * 16 * 2)
    state, metrics = jax.eval_shape(make_train(config), jax.random.key(0))
    kernels = [leaf.shape for path, leaf in jax.tree_util.tree_leaves_with_path(state.params)
               if "Conv_0" in jax.tree_util.keystr(path) and "kernel" in jax.tree_util.keystr(path)]
    assert kernels and all(shape == (3, 3, 4, 8) for shape in kernels), kernels
    assert metrics["losses/value_loss"].shape == (config.num_updates,)
    # the CPU's layout reaches the feed-forward and the recurrent policy: no convolution is left in either program
    for policy in ("mlp", "gru"):
        jaxpr = jax.make_jaxpr(make_train(config.replace(policy=policy, gru_hidden=8)))(jax.random.key(0))
        assert "conv_general_dilated" not in _primitives(jaxpr.jaxpr) and "dot_general" in _primitives(jaxpr.jaxpr)
    with pytest.raises(ConfigError, match=r"^torso: got 'cnn', but CartPole-v1's observation has shape \[4\]"):
        make_trainer(PPOConfig(env="CartPole-v1", torso="cnn"))
    with pytest.raises(ConfigError, match=r"^reset_ratio: 3 does not divide num_envs 4"):
        make_trainer(PPOConfig(env="CartPole-v1", reset_ratio=3))


def test_optimistic_resets_hand_a_few_resets_to_the_environments_that_ended():
    env, _ = make_env("CartPole-v1")
    n, ratio = 8, 4
    plain = make_vector_step(env, "clip", 1)
    shared = make_vector_step(env, "clip", ratio)
    keys = jax.random.split(jax.random.key(0), n)
    _, states = jax.vmap(env.reset)(keys)
    # push the poles over: some environments end on this step, the others do not
    states = states.replace(theta=jnp.where(jnp.arange(n) % 3 == 0, 0.25, 0.0))
    actions = jnp.zeros((n,), jnp.int32)
    step_keys = jax.random.split(jax.random.key(1), n)

    @jax.jit
    def both(step_keys, states, actions):  # one program: the plain step, the shared one, the resets
        resets = jax.vmap(lambda k: env.reset(jax.random.split(k)[1]))(step_keys[: n // ratio])[0]
        return plain(step_keys, states, actions), shared(step_keys, states, actions), resets

    plain_out, shared_out, resets = both(step_keys, states, actions)
    p_obs, p_states, p_reward, p_term, p_trunc, p_final = plain_out
    s_obs, s_states, s_reward, s_term, s_trunc, s_final = shared_out
    done = np.asarray(p_term | p_trunc)
    assert 0 < done.sum() < n
    for a, b in ((p_reward, s_reward), (p_term, s_term), (p_trunc, s_trunc), (p_final, s_final)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)  # the steps themselves are the same
    np.testing.assert_allclose(np.asarray(s_obs)[~done], np.asarray(p_obs)[~done], atol=1e-6)  # no end: no reset
    # the j-th environment that ended takes the j-th of the n / ratio resets, made from the first keys
    ended = np.flatnonzero(done)
    for j, i in enumerate(ended):
        np.testing.assert_allclose(np.asarray(s_obs)[i], np.asarray(resets)[j % (n // ratio)], atol=1e-6)


@pytest.mark.parametrize("name, n", [("Breakout-MinAtar", 8), ("Probe-Constant", 6)])
def test_resets_of_the_ended_environments_only_are_gymnaxs_own(name, n):
    """``resets="ended"`` computes reset states only where an episode ended, from the keys gymnax's
    step would use: the same observations, rewards, flags and states as ``"all"``, bit for bit (on
    these environments no float rounding differs), with several episodes ending at one step (several
    passes: Probe-Constant ends every episode at every step), and under vmap as in separate runs."""
    env, _ = make_env(name)
    every = random_rollout(env, make_vector_step(env, "clip", 1, "all"), n, 150)
    ended = random_rollout(env, make_vector_step(env, "clip", 1, "ended"), n, 150)
    keys = jax.random.split(jax.random.key(3), 3)
    want, got = jax.jit(jax.vmap(every))(keys), jax.jit(jax.vmap(ended))(keys)
    done = np.asarray(want[2] | want[3])
    assert done.sum(axis=-1).max() >= 2 and done.sum() >= 30  # several at one step; many in all
    if name == "Probe-Constant":
        assert done.all()  # every environment at every step: a pass per environment
    else:
        assert len({int(c) for c in done.sum(axis=(1, 2))}) == 3  # the members end different numbers of episodes
    for a, b in zip(jax.tree_util.tree_leaves(want), jax.tree_util.tree_leaves(got)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    alone = jax.jit(ended)(keys[1])  # a member of the sweep is the run alone
    for a, b in zip(jax.tree_util.tree_leaves(alone), jax.tree_util.tree_leaves(got)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b)[1])


def test_resets_of_the_ended_environments_train_cartpole_as_all_resets_do():
    """Trained with either resets layout, CartPole gives the same episodes' returns; the network's
    numbers agree to float rounding (the two programs fuse CartPole's physics differently)."""
    config = PPOConfig(env="CartPole-v1", num_envs=8, num_steps=32, total_timesteps=8 * 32 * 6, num_minibatches=2,
                       update_epochs=1)
    runs = {}
    for resets in ("all", "ended"):
        tuning = dataclasses.replace(DEFAULTS["cpu"], resets=resets)
        runs[resets] = jax.jit(make_train(config, tuning=tuning))(jax.random.key(0))[1]
    assert runs["all"].keys() == runs["ended"].keys()
    for name in runs["all"]:
        np.testing.assert_allclose(np.asarray(runs["all"][name]), np.asarray(runs["ended"][name]), rtol=1e-3,
                                   atol=1e-5, err_msg=name)


def test_the_default_resets_layout_is_the_environments_own_choice():
    """``resets="env"`` (every backend's default) resets only the ended environments where the
    environment class says its reset is costly, a user's own class included, and every
    environment elsewhere; the suites whose reset builds a world or solves a model say so."""
    from gymnax.environments.classic_control import CartPole

    from purejaxppo.envs import EnvAdapter

    class CostlyCartPole(CartPole):
        costly_reset = True

    costly_cartpole = CostlyCartPole()
    assert DEFAULTS["cpu"].resets == DEFAULTS["gpu"].resets == "env"
    for env, costly in ((make_env("CartPole-v1")[0], False),
                        (EnvAdapter("CostlyCartPole", costly_cartpole, costly_cartpole.default_params), True)):
        assert env.costly_reset is costly
        n = 4
        _, states = jax.vmap(env.reset)(jax.random.split(jax.random.key(0), n))
        args = (jax.random.split(jax.random.key(1), n), states, jnp.zeros(n, jnp.int32))
        loops = {r: "while" in str(jax.make_jaxpr(make_vector_step(env, "clip", 1, r))(*args))
                 for r in ("env", "all", "ended")}
        assert loops == {"env": costly, "all": False, "ended": True}  # the passes are a while loop
