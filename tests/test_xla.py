"""The XLA flags the package sets on import."""

from purejaxppo._xla import EIGEN_FLAG, configure_xla


def test_eigen_flag_is_added_once():
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    assert configure_xla(env)
    assert env["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=4 {EIGEN_FLAG}=false"
    assert not configure_xla(env)
    assert env["XLA_FLAGS"].count(EIGEN_FLAG) == 1


def test_user_choice_is_respected():
    env = {"XLA_FLAGS": f"{EIGEN_FLAG}=true"}
    assert not configure_xla(env)
    assert env["XLA_FLAGS"] == f"{EIGEN_FLAG}=true"
    env = {"PUREJAXPPO_EIGEN_THREADS": "1"}
    assert not configure_xla(env)
    assert "XLA_FLAGS" not in env
    env = {}
    assert configure_xla(env) and env["XLA_FLAGS"] == f"{EIGEN_FLAG}=false"


def test_flag_is_active_in_this_session():
    import os

    import jax
    import jax.numpy as jnp

    assert f"{EIGEN_FLAG}=false" in os.environ["XLA_FLAGS"]
    assert float(jax.jit(lambda x: x.sum())(jnp.ones(3))) == 3.0
