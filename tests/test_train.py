"""The compiled training program: learning, determinism, vmap, tracing, algorithm switches."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxppo import METRIC_NAMES, HParams, PPOConfig, make_train, make_trainer, preset
from purejaxppo.core.config import HPARAM_FIELDS
from purejaxppo.core.losses import adaptive_kl_update, kl_controller_init

SMALL = PPOConfig(
    env="CartPole-v1",
    num_envs=8,
    num_steps=32,
    num_minibatches=4,
    update_epochs=2,
    total_timesteps=8 * 32 * 12,
    lr=2.5e-3,
)


def test_same_key_gives_identical_metrics_and_other_keys_differ(small_train):
    train, _ = small_train
    hp = HParams.from_config(SMALL)
    _, m1 = train(jax.random.key(3), hp)
    _, m2 = train(jax.random.key(3), hp)
    _, m3 = train(jax.random.key(4), hp)
    for name in m1:
        np.testing.assert_array_equal(np.asarray(m1[name]), np.asarray(m2[name]), err_msg=name)
    assert not np.allclose(np.asarray(m1["losses/value_loss"]), np.asarray(m3["losses/value_loss"]))


def test_vmap_over_keys_equals_separate_runs(small_train):
    train, _ = small_train
    hp = HParams.from_config(SMALL)
    keys = jax.random.split(jax.random.key(7), 3)
    _, batched = jax.jit(jax.vmap(make_train(SMALL), in_axes=(0, None)))(keys, hp)
    for i in range(3):
        _, single = train(keys[i], hp)
        for name in ("charts/episodic_return", "losses/value_loss", "losses/approx_kl", "losses/entropy"):
            np.testing.assert_allclose(
                np.asarray(batched[name][i]), np.asarray(single[name]), rtol=2e-4, atol=1e-5, err_msg=name
            )


# A configuration in which every float hyperparameter changes the run's numbers.
EVERY_FIELD = SMALL.replace(kl_penalty="adaptive", target_kl=0.5, total_timesteps=8 * 32 * 6)
CHANGED = dict(lr=1e-3, adam_eps=1e-2, gamma=0.9, gae_lambda=0.8, clip_eps=0.1, vf_clip_eps=0.05, ent_coef=0.05,
               vf_coef=1.0, max_grad_norm=0.05, kl_coef=0.3, kl_target=1e-6, target_kl=1e-9)


def counted_jit(config):
    """The jitted train function, counting its traces. It keeps the name ``train``, so its program is the
    one ``jax.jit(make_train(config))`` lowers to and the session's compilation cache serves both."""
    traces = []
    train = make_train(config)

    @functools.wraps(train)
    def counted(key, hparams):
        traces.append(1)
        return train(key, hparams)

    return jax.jit(counted), traces


@pytest.fixture(scope="module")
def small_train():
    """One compiled train function shared by the tests below; counts its traces."""
    return counted_jit(SMALL)


@pytest.fixture(scope="module")
def adaptive_train():
    """The program with the adaptive KL penalty, shared; counts its traces."""
    return counted_jit(EVERY_FIELD)


@pytest.fixture(scope="module")
def fixed_train():
    """The program with a fixed KL penalty (its coefficient is traced), shared."""
    return jax.jit(make_train(SMALL.replace(kl_penalty="fixed")))


def test_each_float_hyperparameter_is_traced_and_changes_the_run(adaptive_train):
    # TRPO's traced step settings do not enter a PPO run; tests/test_trpo.py runs two max_kl radii in one program
    assert set(CHANGED) == set(HPARAM_FIELDS) - {"max_kl", "cg_damping", "backtrack_ratio"}
    train, traces = adaptive_train
    hp = HParams.from_config(EVERY_FIELD)
    _, base = train(jax.random.key(0), hp)
    n = len(traces)
    for field, value in CHANGED.items():  # one field at a time
        _, changed = train(jax.random.key(0), hp.replace(**{field: jnp.float32(value)}))
        assert len(traces) == n, f"changing {field} retraced the program"
        differs = [k for k in base if not np.array_equal(np.asarray(base[k]), np.asarray(changed[k]), equal_nan=True)]
        assert differs, f"changing {field} changed nothing: the program does not read it from hparams"


def test_no_float_hyperparameter_is_read_from_the_config():
    # Built from configurations that differ in every float hyperparameter and traced with the same
    # hparams, the programs are identical; a value read from config would be a different constant.
    hp = HParams.from_config(EVERY_FIELD)
    key = jax.random.key(0)

    def program(config):
        return str(jax.make_jaxpr(make_train(config))(key, hp))

    assert program(EVERY_FIELD.replace(**CHANGED)) == program(EVERY_FIELD)
    # the comparison sees a constant that does come from the config (a static float setting)
    with_obs_norm = EVERY_FIELD.replace(normalize_obs=True)
    assert program(with_obs_norm.replace(clip_obs=5.0)) != program(with_obs_norm)


def test_train_returns_every_metric_of_the_schema(small_train):
    train, _ = small_train
    _, metrics = train(jax.random.key(0), HParams.from_config(SMALL))
    assert set(metrics) == set(METRIC_NAMES) and len(metrics) == len(METRIC_NAMES)
    assert all(np.asarray(v).shape == (SMALL.num_updates,) for v in metrics.values())


def test_train_compiles_once_with_chex():
    train = jax.jit(chex.assert_max_traces(make_train(SMALL), n=1))
    hp = HParams.from_config(SMALL)
    train(jax.random.key(0), hp)
    train(jax.random.key(1), hp.replace(lr=jnp.float32(1e-4), clip_eps=jnp.float32(0.3)))


def test_adaptive_kl_penalty_follows_the_paper_rule(adaptive_train):
    train, _ = adaptive_train
    hp = HParams.from_config(EVERY_FIELD.replace(clip_eps=0.0, kl_coef=1.0, kl_target=0.003, target_kl=0.0))
    _, m = train(jax.random.key(0), hp)
    coef = np.asarray(m["losses/kl_coef"])
    kl = np.asarray(m["losses/post_update_kl"])
    assert coef[0] == 1.0
    state = kl_controller_init(1.0)
    for i in range(len(coef) - 1):
        state = adaptive_kl_update(state, kl[i], 0.003)
        assert coef[i + 1] == pytest.approx(float(state.coef)), i
    assert len(set(coef.tolist())) > 1, "the coefficient never moved"
    assert np.all(np.asarray(m["losses/clipfrac"]) == 0.0)  # clipping off


def test_fixed_kl_penalty_with_clipping_keeps_its_coefficient(fixed_train):
    _, m = fixed_train(jax.random.key(0), HParams.from_config(SMALL.replace(kl_coef=0.5)))
    np.testing.assert_array_equal(np.asarray(m["losses/kl_coef"]), 0.5)
    assert np.all(np.isfinite(np.asarray(m["losses/policy_loss"])))


def test_kl_penalty_changes_the_update(small_train, fixed_train):
    _, m_off = small_train[0](jax.random.key(0), HParams.from_config(SMALL))
    _, m_on = fixed_train(jax.random.key(0), HParams.from_config(SMALL.replace(kl_coef=5.0)))
    # same first rollout, different optimisation
    assert m_off["charts/episodic_return"][0] == m_on["charts/episodic_return"][0]
    assert not np.allclose(np.asarray(m_off["losses/approx_kl"]), np.asarray(m_on["losses/approx_kl"]))


def test_target_kl_early_stop_inside_the_program(adaptive_train):
    train, _ = adaptive_train
    hp = HParams.from_config(EVERY_FIELD.replace(target_kl=0.0))
    _, m_all = train(jax.random.key(0), hp)
    np.testing.assert_array_equal(np.asarray(m_all["losses/epochs"]), 2)
    _, m_stop = train(jax.random.key(0), hp.replace(target_kl=jnp.float32(1e-9)))
    np.testing.assert_array_equal(np.asarray(m_stop["losses/epochs"]), 1)


def test_continuous_actions_with_normalisation_run():
    config = preset("Pendulum-v1").replace(num_envs=4, num_steps=64, num_minibatches=4, update_epochs=2, total_timesteps=4 * 64 * 8)
    trainer = make_trainer(config)
    state, m = jax.jit(trainer.train)(jax.random.key(0))
    assert trainer.env.action_kind == "continuous"
    for name in ("losses/policy_loss", "losses/value_loss", "losses/entropy"):
        assert np.all(np.isfinite(np.asarray(m[name]))), name
    # the observation statistics moved away from their initial values
    assert float(state.obs_rms.count) > 4 * 64 * 7
    assert float(jnp.abs(state.obs_rms.mean).sum()) > 0.0
    assert float(state.ret_rms.var) != 1.0


def test_shared_torso_has_one_torso():
    config = SMALL.replace(shared_torso=True, total_timesteps=8 * 32 * 2)
    trainer = make_trainer(config)
    state, m = jax.jit(trainer.train)(jax.random.key(0))
    assert "critic_torso" not in state.params["params"]
    assert np.all(np.isfinite(np.asarray(m["losses/value_loss"])))


def test_learning_rate_anneals_linearly(small_train):
    _, m = small_train[0](jax.random.key(0), HParams.from_config(SMALL.replace(lr=1e-3)))
    n = SMALL.num_updates
    np.testing.assert_allclose(np.asarray(m["charts/learning_rate"]), 1e-3 * (1 - np.arange(n) / n), rtol=1e-6)


@pytest.mark.parametrize("field, value, message", [
    ("lr", np.ones((4, 4)), "lr: got an array of shape (4, 4); accepted: a number > 0"),
    ("lr", np.float32(1e-3), "lr: got np.float32(0.001), not a Python value; accepted: a number > 0, as a Python "
                             "number (float(x) or int(x))"),
    ("num_envs", np.int64(4), "num_envs: got np.int64(4), not a Python value; accepted: a positive integer"),
])
def test_numpy_values_in_a_config_are_named_in_one_line(field, value, message):
    """A config goes to JSON with its run: a NumPy scalar is refused with what to pass instead, an
    array without its multi-line repr."""
    from purejaxppo import ConfigError

    with pytest.raises(ConfigError) as e:
        make_trainer(PPOConfig(env="CartPole-v1").replace(**{field: value}))
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


@pytest.mark.parametrize("call, message", [
    (lambda: PPOConfig().replace(lrr=1e-3), "unknown config field(s) lrr (did you mean lr?); accepted: env, seed"),
    (lambda: make_trainer(None), "config: got a NoneType; accepted: a PPOConfig"),
    (lambda: make_trainer("CartPole-v1"), "config: got a str; accepted: a PPOConfig"),
    (lambda: preset(None), "preset: got None; accepted: a preset name, one of CartPole-v1"),
    (lambda: __import__("purejaxppo").make_env(None), "env: got None; accepted: an environment name"),
    (lambda: __import__("purejaxppo").register_env("CartPole-v1", object),
     "register_env: CartPole-v1 is already registered; accepted: a new name"),
    (lambda: __import__("purejaxppo").register_env("x", 5), "register_env: got 5 for x; accepted: a gymnax"),
    (lambda: __import__("purejaxppo").register_env("brax/x", object), "register_env: got the name 'brax/x'"),
])
def test_wrong_arguments_to_the_python_api_are_one_line(call, message):
    from purejaxppo import ConfigError

    with pytest.raises(ConfigError) as e:
        call()
    assert str(e.value).startswith(message) and "\n" not in str(e.value)
