"""Vmapped initialisation on the CPU: equal to separate initialisations, and it finishes.

A batched QR factorisation (what flax's orthogonal initialiser becomes under ``vmap``)
deadlocks XLA's CPU thread pool on a two-core machine within a few calls. The network's
initialiser avoids it; the check runs in a child process so that a regression fails this
test after a timeout instead of stalling the whole session.
"""

import subprocess
import sys
import textwrap

import jax
import numpy as np

from purejaxppo import PPOConfig, make_env
from purejaxppo.core.networks import make_network, orthogonal

CHILD = textwrap.dedent(
    """
    import sys
    import jax, jax.numpy as jnp
    from purejaxppo import PPOConfig, make_env
    from purejaxppo.core import networks
    if sys.argv[1:] == ["flax"]:  # the plain initialiser, to show that this check can fail
        from flax.linen import initializers
        networks.orthogonal = initializers.orthogonal
    def layers(k):  # six independent 64x64 draws, as in a network's hidden layers
        return [networks.orthogonal(1.0)(kk, (64, 64)) for kk in jax.random.split(k, 6)]
    config = PPOConfig(env="CartPole-v1")
    env, _ = make_env(config.env)
    net = networks.make_network(config, env)
    init = jax.jit(jax.vmap(lambda k: (net.init(k, jnp.zeros((1, env.obs_dim))), layers(k))))
    keys = jax.random.split(jax.random.key(0), 12)
    for i in range(200):
        jax.block_until_ready(init(keys))
    print("ok")
    """
)


def test_vmapped_network_init_finishes():
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"


def test_vmapped_orthogonal_equals_separate_draws():
    keys = jax.random.split(jax.random.key(3), 6).reshape(2, 3)
    init = orthogonal(2.0)
    batched = jax.jit(jax.vmap(jax.vmap(lambda k: init(k, (8, 5)))))(keys)
    for i in range(2):
        for j in range(3):
            single = init(keys[i, j], (8, 5))
            np.testing.assert_array_equal(np.asarray(batched[i, j]), np.asarray(single))
            q = np.asarray(single) / 2.0
            np.testing.assert_allclose(q.T @ q, np.eye(5), atol=1e-5)  # orthonormal columns, gain 2


def test_network_params_do_not_depend_on_vmap():
    config = PPOConfig(env="CartPole-v1")
    env, _ = make_env(config.env)
    net = make_network(config, env)
    keys = jax.random.split(jax.random.key(0), 3)
    x = np.zeros((1, env.obs_dim), np.float32)
    batched = jax.vmap(lambda k: net.init(k, x))(keys)
    for i in range(3):
        single = net.init(keys[i], x)
        for a, b in zip(jax.tree_util.tree_leaves(single), jax.tree_util.tree_leaves(batched)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b)[i])
