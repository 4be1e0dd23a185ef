"""TRPO (algo="trpo", core/trpo.py) against independent references.

Conjugate gradient against a direct solve; Fisher-vector products against the Fisher built from
full Jacobians; the exact KL of accepted steps recomputed in NumPy; a built case where the full
step lowers the surrogate and the line search backs off; learning on CartPole and Pendulum.
"""

import functools
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import run_main

from purejaxppo.core import trpo
from purejaxppo.core.config import HParams, PPOConfig, validate
from purejaxppo.core.metrics import METRIC_NAMES, TRPO_METRIC_NAMES
from purejaxppo.core.train import make_parts, make_trainer
from purejaxppo.errors import ConfigError

CARTPOLE = PPOConfig(env="CartPole-v1", algo="trpo", num_envs=4, num_steps=128, num_minibatches=4, update_epochs=4,
                     total_timesteps=4 * 128 * 40, max_kl=0.01)


# --- conjugate gradient and Fisher-vector products -------------------------------------------------

def test_conjugate_gradient_matches_a_direct_solve():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(6, 6))
    a = m @ m.T + 0.5 * np.eye(6)  # symmetric positive definite
    b = rng.normal(size=6)
    x = trpo.conjugate_gradient(lambda v: jnp.asarray(a, jnp.float32) @ v, jnp.asarray(b, jnp.float32), iters=6)
    np.testing.assert_allclose(np.asarray(x), np.linalg.solve(a, b), rtol=2e-3, atol=2e-3)
    # fewer iterations than the dimension: a partial solve that already lowers the residual
    x2 = trpo.conjugate_gradient(lambda v: jnp.asarray(a, jnp.float32) @ v, jnp.asarray(b, jnp.float32), iters=2)
    assert np.linalg.norm(a @ np.asarray(x2) - b) < np.linalg.norm(b)


def _linear_policy(theta, obs, n_out):
    w = theta[: obs.shape[1] * n_out].reshape(obs.shape[1], n_out)
    return obs @ w, theta[obs.shape[1] * n_out:]


def test_fisher_vector_product_matches_the_explicit_fisher_of_a_categorical_policy():
    rng = np.random.default_rng(1)
    obs = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)
    theta = jnp.asarray(rng.normal(size=3 * 4) * 0.5, jnp.float32)
    logits_of = lambda t: _linear_policy(t, obs, 4)[0]
    old = jax.lax.stop_gradient(logits_of(theta))
    mean_kl = lambda t: jnp.mean(trpo.categorical_kl(old, logits_of(t)))
    # F = mean_s J_s^T (diag p_s - p_s p_s^T) J_s, J_s = d logits_s / d theta (full Jacobians)
    jac = np.asarray(jax.jacobian(logits_of)(theta), np.float64)  # [5, 4, P]
    p = np.asarray(jax.nn.softmax(old), np.float64)
    fisher = np.mean([jac[s].T @ (np.diag(p[s]) - np.outer(p[s], p[s])) @ jac[s] for s in range(5)], axis=0)
    v = rng.normal(size=theta.shape)
    fvp = trpo.fisher_vector_product(mean_kl, theta, 0.1)(jnp.asarray(v, jnp.float32))
    np.testing.assert_allclose(np.asarray(fvp), fisher @ v + 0.1 * v, rtol=1e-4, atol=1e-5)


def test_fisher_vector_product_matches_the_explicit_fisher_of_a_gaussian_policy():
    rng = np.random.default_rng(2)
    obs = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)
    theta = jnp.asarray(rng.normal(size=3 * 2 + 2) * 0.5, jnp.float32)  # weights, then log_std [2]
    pi_of = lambda t: _linear_policy(t, obs, 2)
    old = jax.tree.map(jax.lax.stop_gradient, pi_of(theta))
    mean_kl = lambda t: jnp.mean(trpo.gaussian_kl(old, pi_of(t)))
    # Fisher of N(mu, sigma) in (mu, log sigma): diag(1 / sigma^2) and 2, chained through the Jacobians
    j_mu = np.asarray(jax.jacobian(lambda t: pi_of(t)[0])(theta), np.float64)  # [5, 2, P]
    j_ls = np.asarray(jax.jacobian(lambda t: jnp.broadcast_to(pi_of(t)[1], (5, 2)))(theta), np.float64)
    inv_var = np.exp(-2 * np.asarray(old[1], np.float64))
    fisher = np.mean([j_mu[s].T @ np.diag(inv_var) @ j_mu[s] + 2 * j_ls[s].T @ j_ls[s] for s in range(5)], axis=0)
    v = rng.normal(size=theta.shape)
    fvp = trpo.fisher_vector_product(mean_kl, theta, 0.0)(jnp.asarray(v, jnp.float32))
    np.testing.assert_allclose(np.asarray(fvp), fisher @ v, rtol=1e-4, atol=1e-5)


# --- the line search ----------------------------------------------------------------------------

def _expected_search(surrogate, kl, step, max_kl, ratio, iters):
    """The line search as a plain loop: (accepted try or None)."""
    base = surrogate(0.0)
    for i in range(iters):
        t = ratio**i * step
        if surrogate(t) > base and kl(t) <= max_kl:
            return i
    return None


def test_line_search_backs_off_when_the_full_step_lowers_the_surrogate():
    # surrogate g.theta - 50 |theta|^2 along g = e_1, KL |theta|^2 / 2 (Fisher I): the full step,
    # sqrt(2 max_kl) long, is within the KL but lowers the surrogate; shorter steps improve it
    g = jnp.asarray([1.0, 0.0], jnp.float32)
    surrogate = lambda t: g @ t - 50.0 * t @ t
    mean_kl = lambda t: 0.5 * t @ t
    hp = HParams.from_config(PPOConfig(max_kl=0.01, cg_damping=0.0, backtrack_ratio=0.8))
    theta0 = jnp.zeros(2, jnp.float32)
    new, search = trpo.trust_region_step(surrogate, mean_kl, theta0, hp, cg_iters=2, backtrack_iters=15)
    full = np.sqrt(2 * 0.01)
    assert float(surrogate(jnp.asarray([full, 0.0]))) < 0.0  # the full step lowers it
    i = _expected_search(lambda s: s - 50 * s * s, lambda s: 0.5 * s * s, full, 0.01, 0.8, 15)
    assert i == 9 and int(search.backtracks) == i and bool(search.accepted)
    np.testing.assert_allclose(np.asarray(new), [full * 0.8**i, 0.0], rtol=1e-5)
    assert float(search.surrogate_improvement) > 0 and float(search.step_kl) <= 0.01


def test_line_search_keeps_the_old_policy_when_no_try_is_accepted():
    surrogate = lambda t: -jnp.sum(t * t)
    mean_kl = lambda t: jnp.sum(t * t)
    theta = jnp.asarray([0.3, -0.2], jnp.float32)
    new, search = trpo.line_search(surrogate, mean_kl, theta, jnp.asarray([1.0, 1.0]), 0.01, 0.5, iters=4)
    np.testing.assert_array_equal(np.asarray(new), np.asarray(theta))
    assert (int(search.backtracks), bool(search.accepted)) == (4, False)
    assert float(search.step_kl) == 0.0 and float(search.surrogate_improvement) == 0.0


def test_line_search_backs_off_to_the_kl_radius():
    surrogate = lambda t: jnp.sum(t)
    mean_kl = lambda t: jnp.sum(t * t)
    theta = jnp.zeros(1, jnp.float32)
    new, search = trpo.line_search(surrogate, mean_kl, theta, jnp.asarray([1.0]), 0.05, 0.5, iters=10)
    # tries 1, 0.5, 0.25, 0.125: KL 1, 0.25, 0.0625, 0.0156 -> the fourth (3 backtracks)
    assert int(search.backtracks) == 3 and float(new[0]) == pytest.approx(0.125)


# --- on the trainer's own batches ---------------------------------------------------------------

def test_every_accepted_step_keeps_the_exact_mean_kl_within_max_kl():
    from purejaxppo.core.train import init_state

    config = CARTPOLE.replace(total_timesteps=4 * 128)
    parts = make_parts(config)

    @jax.jit
    def update(state, key, hp):  # a rollout, its batch and the TRPO step, in one program
        state, rollout, _ = parts.policy.collect(parts, state, key)
        state, batch = parts.policy.make_batch(parts, state, rollout, hp)
        new_params, info = trpo.policy_step(parts, batch, state.params, hp)
        policy = functools.partial(parts.network.apply, method=parts.network.policy)
        return state, new_params, info, policy(state.params, batch.obs), policy(new_params, batch.obs)

    for max_kl in (0.002, 0.02):  # traced: one program
        hp = HParams.from_config(config).replace(max_kl=jnp.float32(max_kl))
        state = init_state(parts, jax.random.key(3), hp)
        for i in range(3):  # three rollouts with the moving policy
            state, new_params, info, old_logits, new_logits = update(state, jax.random.key(10 + i), hp)
            logp_old, logp_new = (np.asarray(jax.nn.log_softmax(x), np.float64) for x in (old_logits, new_logits))
            kl = float(np.mean(np.sum(np.exp(logp_old) * (logp_old - logp_new), axis=-1)))
            if int(info.accepted):
                assert kl <= max_kl * (1 + 1e-4)
                assert kl == pytest.approx(float(info.step_kl), rel=1e-3, abs=1e-7)
            else:
                assert kl == 0.0
            # the policy step leaves the critic alone
            for name in trpo.CRITIC_MODULES:
                jax.tree.map(np.testing.assert_array_equal, new_params["params"][name], state.params["params"][name])
            state = state.replace(params=new_params)


def test_trpo_learns_pendulum():
    config = PPOConfig(env="Pendulum-v1", algo="trpo", num_envs=8, num_steps=200, num_minibatches=4,
                       update_epochs=5, lr=1e-3, gamma=0.95, normalize_obs=True, normalize_reward=True,
                       max_kl=0.02, total_timesteps=8 * 200 * 40)
    _, m = jax.jit(make_trainer(config).train)(jax.random.key(0))
    returns = np.asarray(m["charts/episodic_return"])
    assert np.nanmean(returns[-5:]) > -700.0, returns  # random torques: about -1200


def test_trpo_with_a_recurrent_policy_runs():
    config = PPOConfig(env="CartPole-v1", algo="trpo", policy="gru", gru_hidden=16, num_envs=4, num_steps=16,
                       num_minibatches=2, update_epochs=1, total_timesteps=4 * 16 * 3)
    _, m = jax.jit(make_trainer(config).train)(jax.random.key(0))
    assert np.all(np.isfinite(np.asarray(m["losses/value_loss"])))
    assert np.all(np.asarray(m["trpo/step_kl"]) <= config.max_kl * (1 + 1e-4))
    assert np.asarray(m["trpo/accepted"]).sum() >= 1


def test_ppo_keeps_its_schema_and_trpo_refuses_a_penalty():
    assert "trpo/step_kl" not in METRIC_NAMES
    with pytest.raises(ConfigError, match="kl_penalty: got 'adaptive', but algo trpo"):
        validate(PPOConfig(algo="trpo", kl_penalty="adaptive"))
    with pytest.raises(ConfigError, match="algo: got 'sac'"):
        validate(PPOConfig(algo="sac"))


def test_trpo_learns_cartpole_from_the_command_line_with_its_columns_and_resumes(tmp_path):
    whole, part = tmp_path / "whole", tmp_path / "part"
    c = CARTPOLE
    args = ("--env", "CartPole-v1", "--preset", "none", "--algo", "trpo", "--num-envs", c.num_envs, "--num-steps",
            c.num_steps, "--num-minibatches", c.num_minibatches, "--update-epochs", c.update_epochs,
            "--total-timesteps", c.total_timesteps, "--max-kl", c.max_kl, "--checkpoint-every", 20,
            "--compilation-cache", "off")
    r = run_main("train", *args, "--out", str(whole))
    assert r.returncode == 0, r.stderr
    rows = (whole / "metrics.csv").read_text().splitlines()
    # PPO's columns, then TRPO's own
    assert rows[0].split(",") == ["env_steps", *METRIC_NAMES, "trpo/step_kl", "trpo/surrogate_improvement",
                                  "trpo/backtracks", "trpo/accepted"] == ["env_steps", *TRPO_METRIC_NAMES]
    m = {k: np.asarray([float(v or "nan") for v in col]) for k, *col in zip(*[row.split(",") for row in rows])}
    accepted = m["trpo/accepted"].astype(bool)
    assert accepted.mean() > 0.8
    assert np.all(m["trpo/step_kl"][accepted] <= c.max_kl * (1 + 1e-4))
    assert np.all(m["trpo/surrogate_improvement"][accepted] > 0)
    returns = m["charts/episodic_return"]
    assert np.nanmean(returns[-5:]) > 150.0, returns  # random play: about 22
    # resumed from the checkpoint at update 20: the same rows
    part.mkdir()
    for name in ("config.json", "run.json"):
        (part / name).write_text((whole / name).read_text())
    (part / "checkpoints").mkdir()
    shutil.copytree(whole / "checkpoints" / "20", part / "checkpoints" / "20")
    (part / "metrics.csv").write_text("\n".join(rows[:21]) + "\n")
    r = run_main("train", "--out", str(part), "--resume")
    assert r.returncode == 0, r.stderr
    assert (part / "metrics.csv").read_text().splitlines() == rows
