"""The RLHF pieces against independent references: hand-worked numbers, brute-force loops,
exact enumeration. (The whole study, trained, is in tests/test_rlhf.py.)"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxppo.core import losses
from purejaxppo.rlhf import dpo, exact, ppo, reward
from purejaxppo.rlhf import model as seqmodel
from purejaxppo.rlhf.task import (
    TaskSpec,
    all_responses,
    entropy_per_token,
    gold_reward,
    label_pairs,
    make_task,
    max_count,
    sample_g,
    sequence_log_probs_g,
)


# ---- the KL controller (Ziegler et al. 2019) --------------------------------------------------
@pytest.mark.parametrize(
    "ratio, expected",
    [
        (2.0, 0.5 * (1 + 0.2 * 0.5)),  # e = 1 clipped to 0.2; K = 500 / 1000
        (0.5, 0.5 * (1 - 0.2 * 0.5)),  # e = -0.5 clipped to -0.2
        (1.0, 0.5),  # on target: unchanged
        (1.1, 0.5 * (1 + 0.1 * 0.5)),  # inside the clip: e = 0.1
        (0.9, 0.5 * (1 - 0.1 * 0.5)),
    ],
)
def test_proportional_controller_hand_worked(ratio, expected):
    state = losses.kl_controller_init(0.5)
    new = losses.proportional_kl_update(state, jnp.float32(ratio * 3.0), 3.0, 500, 1000.0)
    assert float(new.coef) == pytest.approx(expected, rel=1e-6)


def test_proportional_controller_infinite_horizon_is_fixed():
    state = losses.kl_controller_init(0.2)
    assert float(losses.proportional_kl_update(state, jnp.float32(10.0), 1.0, 256, math.inf).coef) == pytest.approx(0.2)


# ---- the task --------------------------------------------------------------------------------
SPEC = TaskSpec(seed=3, n_tokens=3, n_prompts=2, length=4)


@pytest.fixture(scope="module")
def small_task():
    return make_task(SPEC)


def _g_table(task, spec):
    ys = all_responses(spec.n_tokens, spec.length)
    table = np.zeros((spec.n_prompts, len(ys)))
    for x in range(spec.n_prompts):
        for i, y in enumerate(ys):
            p = float(task.p0[x, y[0]])
            for a, b in itertools.pairwise(y):
                p *= float(task.trans[x, a, b])
            table[x, i] = p
    return ys, table


def test_g_log_probs_and_entropy_against_a_python_loop(small_task):
    ys, table = _g_table(small_task, SPEC)
    assert np.allclose(table.sum(axis=1), 1.0, atol=1e-5)
    prompts = np.repeat(np.arange(SPEC.n_prompts)[:, None], len(ys), axis=1)
    logp = sequence_log_probs_g(small_task.p0, small_task.trans, jnp.asarray(prompts), jnp.broadcast_to(ys, (2, *ys.shape)))
    assert np.allclose(np.exp(np.asarray(logp)), table, rtol=1e-4)
    brute = -np.sum(table * np.log(table)) / SPEC.n_prompts / SPEC.length
    assert entropy_per_token(small_task, SPEC) == pytest.approx(brute, rel=1e-4)


def test_gold_is_standardised_under_g_and_penalises_repeats(small_task):
    ys, table = _g_table(small_task, SPEC)
    prompts = np.repeat(np.arange(SPEC.n_prompts)[:, None], len(ys), axis=1)
    gold = np.asarray(gold_reward(small_task, SPEC, jnp.asarray(prompts), jnp.broadcast_to(ys, (2, *ys.shape))))
    joint = table / SPEC.n_prompts
    mean = np.sum(joint * gold)
    assert mean == pytest.approx(0.0, abs=1e-4)
    assert np.sum(joint * (gold - mean) ** 2) == pytest.approx(1.0, rel=1e-4)
    # By hand: prompt 0, response (0, 0, 0, 0) repeats 4 > k = 2 times: linear 4 w[0,0], penalty 2c.
    w = np.asarray(small_task.weights)
    raw = 4 * w[0, 0] - SPEC.penalty * 2
    got = float(gold_reward(small_task, SPEC, jnp.array([0]), jnp.zeros((1, 4), jnp.int32))[0])
    assert got == pytest.approx((raw - float(small_task.gold_shift)) / float(small_task.gold_scale), rel=1e-5)
    assert np.asarray(max_count(jnp.array([[0, 1, 0, 2], [2, 2, 2, 1]]), 3)).tolist() == [2, 3]


def test_sampling_g_matches_its_probabilities(small_task):
    n = 40_000
    prompts = jnp.zeros((n,), jnp.int32)
    ys = np.asarray(sample_g(small_task, jax.random.key(0), prompts, SPEC.length))
    codes = ys @ (SPEC.n_tokens ** np.arange(SPEC.length)[::-1])
    freq = np.bincount(codes, minlength=SPEC.n_tokens**SPEC.length) / n
    _, table = _g_table(small_task, SPEC)
    assert np.max(np.abs(freq - table[0])) < 4 * np.sqrt(0.25 / n)


def test_labels_have_the_planned_noise():
    spec = TaskSpec(length=5)
    task = make_task(spec)
    n = 40_000
    k1, k2, k3, k4 = jax.random.split(jax.random.key(1), 4)
    prompts = jax.random.randint(k1, (n,), 0, spec.n_prompts)
    pairs = label_pairs(task, spec, k4, prompts, sample_g(task, k2, prompts, 5), sample_g(task, k3, prompts, 5))
    wrong = gold_reward(task, spec, prompts, pairs.chosen) < gold_reward(task, spec, prompts, pairs.rejected)
    assert float(jnp.mean(wrong)) == pytest.approx(spec.label_noise, abs=0.012)  # 6 standard errors


def test_bad_task_settings_are_one_line_errors():
    from purejaxppo.errors import ConfigError

    for bad, word in [(TaskSpec(length=9), "length"), (TaskSpec(n_tokens=1), "n_tokens"),
                      (TaskSpec(label_noise=0.5), "label_noise"), (TaskSpec(n_tokens=16, length=8), "enumerate")]:
        with pytest.raises(ConfigError, match=word) as e:
            make_task(bad)
        assert "\n" not in str(e.value)


# ---- the model's sampling agrees with its teacher-forced probabilities -------------------------
def test_sampling_matches_teacher_forced_log_probs():
    model = seqmodel.make_model(3, 2, 2, seqmodel.ModelSpec(width=16, layers=1, heads=2))
    params = seqmodel.init_params(model, jax.random.key(0))
    # Sharpen the random model a little so that the frequencies differ from uniform.
    params = jax.tree_util.tree_map(lambda x: 3 * x, params)
    n = 30_000
    prompts = jnp.ones((n,), jnp.int32)
    ys = np.asarray(seqmodel.sample(model, params, jax.random.key(1), prompts))
    freq = np.bincount(ys[:, 0] * 3 + ys[:, 1], minlength=9) / n
    every = jnp.asarray(all_responses(3, 2))
    probs = np.exp(np.asarray(seqmodel.sequence_log_probs(model, params, jnp.ones((9,), jnp.int32), every)))
    assert probs.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.max(np.abs(freq - probs)) < 4 * np.sqrt(0.25 / n)
    assert np.std(probs) > 0.02  # not uniform: the comparison has teeth


# ---- exact quantities -----------------------------------------------------------------------
def test_best_of_n_against_enumerating_every_draw():
    q = np.array([0.5, 0.3, 0.2])
    r = np.array([0.0, 2.0, 1.0])
    n = 3
    expected = np.zeros(3)
    for draws in itertools.product(range(3), repeat=n):
        best = max(draws, key=lambda i: (r[i], i))
        expected[best] += np.prod(q[list(draws)])
    got = np.exp(np.asarray(exact.best_of_n_log_probs(jnp.log(jnp.asarray(q))[None], jnp.asarray(r)[None], n)))[0]
    assert np.allclose(got, expected, atol=1e-6)
    kl = float(exact.kl(jnp.log(jnp.asarray(got))[None], jnp.log(jnp.asarray(q))[None]))
    assert kl <= exact.best_of_n_kl_bound(n) + 1e-6


def test_win_rate_against_a_double_loop_with_ties():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(12), size=2)
    q = rng.dirichlet(np.ones(12), size=2)
    g = rng.integers(0, 4, size=(2, 12)).astype(np.float32)  # many ties
    brute = 0.0
    for x in range(2):
        for i in range(12):
            for j in range(12):
                brute += p[x, i] * q[x, j] * (1.0 if g[x, i] > g[x, j] else 0.5 if g[x, i] == g[x, j] else 0.0)
    got = float(exact.win_rate(jnp.log(jnp.asarray(p)), jnp.log(jnp.asarray(q)), jnp.asarray(g)))
    assert got == pytest.approx(brute / 2, abs=1e-5)
    assert float(exact.win_rate(jnp.log(jnp.asarray(q)), jnp.log(jnp.asarray(q)), jnp.asarray(g))) == pytest.approx(0.5, abs=1e-5)


def test_optimum_maximises_the_regularised_objective():
    rng = np.random.default_rng(1)
    ref = jnp.log(jnp.asarray(rng.dirichlet(np.ones(20), size=1), jnp.float32))
    r = jnp.asarray(rng.normal(size=(1, 20)), jnp.float32)
    beta = 0.3

    def objective(lp):
        return float(exact.expectation(lp, r) - beta * exact.kl(lp, ref))

    best = objective(exact.optimum_log_probs(ref, r, beta))
    # Its value is beta * log E_ref[exp(r / beta)] (the Gibbs variational principle).
    assert best == pytest.approx(beta * float(jax.nn.logsumexp(ref + r / beta)), rel=1e-5)
    for s in range(20):
        other = exact.optimum_log_probs(ref, r + 0.3 * jnp.asarray(np.random.default_rng(s).normal(size=(1, 20))), beta)
        assert objective(other) <= best + 1e-6


# ---- losses -----------------------------------------------------------------------------------
def test_bradley_terry_and_dpo_losses_hand_worked():
    # -log sigmoid(1) = log(1 + e^-1)
    assert float(reward.bradley_terry_loss(jnp.array([2.0]), jnp.array([1.0]))) == pytest.approx(math.log1p(math.exp(-1)))
    # margin = (-1 - -2) - (-3 - -2) = 2; beta 0.5 -> -log sigmoid(1)
    got = dpo.dpo_loss(jnp.array([-1.0]), jnp.array([-3.0]), jnp.array([-2.0]), jnp.array([-2.0]), 0.5)
    assert float(got) == pytest.approx(math.log1p(math.exp(-1)), rel=1e-6)
    # At initialisation (policy = reference) the DPO loss is log 2 whatever the pair.
    assert float(dpo.dpo_loss(jnp.array([-1.0, -4.0]), jnp.array([-2.0, -0.5]), jnp.array([-1.0, -4.0]),
                              jnp.array([-2.0, -0.5]), 0.1)) == pytest.approx(math.log(2))


def test_reward_whitening():
    x = jnp.array([[1.0, 2.0], [3.0, 6.0]])
    w = np.asarray(ppo.whiten(x))
    assert w.mean() == pytest.approx(0.0, abs=1e-6) and w.std() == pytest.approx(1.0, rel=1e-5)
    kept = np.asarray(ppo.whiten(x, shift_mean=False))
    assert kept.mean() == pytest.approx(3.0, rel=1e-6) and kept.std() == pytest.approx(1.0, rel=1e-5)


def test_token_rewards_put_the_score_on_the_last_token():
    lp = jnp.array([[-1.0, -2.0, -0.5]])
    ref = jnp.array([[-1.5, -1.0, -0.5]])
    r = np.asarray(ppo.token_rewards(lp, ref, jnp.array([3.0]), 0.2))
    assert np.allclose(r, [[-0.2 * 0.5, -0.2 * -1.0, 3.0]])


# ---- PPO: one compiled program, deterministic, vmappable ----------------------------------------
@pytest.fixture(scope="module")
def micro():
    spec = TaskSpec(n_tokens=3, n_prompts=2, length=3)
    task = make_task(spec)
    model = seqmodel.make_model(3, 2, 3, seqmodel.ModelSpec(width=8, layers=1, heads=1))
    sft_params = seqmodel.init_params(model, jax.random.key(0))
    rm = reward.RewardModel(seqmodel.init_params(model, jax.random.key(1)), jnp.float32(0.0), jnp.float32(1.0))
    frozen = ppo.Frozen(sft_params, rm, task)
    settings = ppo.RLHFSettings(iterations=3, batch=16, epochs=2, minibatches=2)
    return spec, model, sft_params, frozen, settings


def test_one_compilation_same_bits_and_vmap_over_seeds_and_betas(micro):
    spec, model, sft_params, frozen, settings = micro
    traces = []

    def chunk(f, state, hparams):
        traces.append(1)
        return ppo.run(model, settings, spec, f, state, hparams, settings.iterations)

    chunk = jax.jit(chunk)

    def one(key, beta):
        h = ppo.RLHFHParams(kl_coef=jnp.float32(beta))
        return chunk(frozen, ppo.init(model, sft_params, key, h), h)

    keys = jax.random.split(jax.random.key(0), 2)
    runs = {(k, b): one(keys[k], b) for k in (0, 1) for b in (0.0, 1.0)}
    again = one(keys[0], 0.0)
    assert len(traces) == 1  # seeds and betas (and a rerun) share one compilation
    # Same seed, same bits.
    for a, b in zip(jax.tree_util.tree_leaves((again[0].params, again[1])),
                    jax.tree_util.tree_leaves((runs[0, 0.0][0].params, runs[0, 0.0][1])), strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    # The whole run as one function, vmapped over seeds x betas, equals the separate runs.
    train = ppo.make_train(model, settings, spec, frozen, sft_params)
    grid = jax.jit(jax.vmap(jax.vmap(lambda k, b: train(k, ppo.RLHFHParams(kl_coef=b)), (None, 0)), (0, None)))
    _, metrics = grid(keys, jnp.array([0.0, 1.0]))
    assert metrics.kl.shape == (2, 2, settings.iterations)
    for k in (0, 1):
        for j, b in enumerate((0.0, 1.0)):
            for f in ("proxy", "kl", "reward", "approx_kl"):
                assert np.allclose(np.asarray(getattr(metrics, f)[k, j]), np.asarray(getattr(runs[k, b][1], f)), atol=1e-4), f
    # The policy starts as the reference; beta enters the rewards; ratio 1 on each first minibatch.
    assert float(metrics.kl[0, 0, 0]) == pytest.approx(0.0, abs=1e-5)
    assert not np.allclose(np.asarray(metrics.reward[0, 0]), np.asarray(metrics.reward[0, 1]))
    assert float(jnp.max(metrics.first_ratio_dev)) < 1e-5


def test_bad_ppo_settings_are_one_line_errors(micro):
    from purejaxppo.errors import ConfigError

    spec, model, sft_params, frozen, _ = micro
    with pytest.raises(ConfigError, match="divisible"):
        ppo.make_train(model, ppo.RLHFSettings(batch=10, minibatches=4), spec, frozen, sft_params)
    with pytest.raises(ConfigError, match="epochs"):
        ppo.make_train(model, ppo.RLHFSettings(epochs=0), spec, frozen, sft_params)
    for bad, message in ((dict(batch="8"), "batch: got '8'; accepted: an integer >= 1"),
                         (dict(iterations=2.5), "iterations: got 2.5; accepted: an integer >= 1")):
        with pytest.raises(ConfigError) as e:
            ppo.make_train(model, ppo.RLHFSettings(**bad), spec, frozen, sft_params)
        assert str(e.value) == message
    from purejaxppo.rlhf import pipeline

    with pytest.raises(ConfigError, match=r"^eval_every: got 0; accepted: an integer >= 1$"):
        pipeline.check_settings(pipeline.tiny()._replace(eval_every=0))


def test_grid_log_probs_by_prefix_equal_one_pass_per_response():
    model = seqmodel.make_model(3, 2, 4, seqmodel.ModelSpec(width=16, layers=2, heads=2))
    params = jax.tree_util.tree_map(lambda x: 2 * x, seqmodel.init_params(model, jax.random.key(5)))
    prompts, responses = exact.grid(2, 3, 4)
    direct = exact.all_log_probs(model, params, prompts, responses, chunk=50)
    fast = exact.grid_log_probs(model, params, 2, chunk=7)
    assert fast.shape == direct.shape == (2, 81)
    assert np.allclose(np.asarray(fast), np.asarray(direct), atol=1e-5)
    assert np.allclose(np.exp(np.asarray(fast)).sum(axis=1), 1.0, atol=1e-5)


def test_whitened_rewards_train(micro):
    spec, model, sft_params, frozen, settings = micro
    train = ppo.make_train(model, settings._replace(iterations=2, whiten_rewards=True), spec, frozen, sft_params)
    _, metrics = jax.jit(train)(jax.random.key(0), ppo.RLHFHParams())
    assert all(np.all(np.isfinite(np.asarray(x))) for x in metrics)
    assert float(metrics.approx_kl[0]) > 0  # the policy moved on the whitened rewards


# ---- exact sums in float64 ---------------------------------------------------------------------
def test_exact_kl_hand_worked_and_float64():
    # KL([1/2, 1/2] || [1/4, 3/4]) = 1/2 log 2 + 1/2 log(2/3)
    p, q = np.log([[0.5, 0.5]]), np.log([[0.25, 0.75]])
    assert exact.kl(p, q) == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3), rel=1e-12)
    # float32 log-probabilities that sum to 1 only to ~1e-6: renormalised, a policy's KL to itself is 0
    rng = np.random.default_rng(0)
    lq = np.log(rng.dirichlet(np.full(46656, 0.3), size=2)).astype(np.float32)
    assert abs(exact.kl(lq, lq)) < 1e-12


def test_best_of_n_in_float64_is_exact_at_n_1_and_under_the_bound():
    rng = np.random.default_rng(1)
    q = rng.dirichlet(np.full(46656, 0.3), size=2)
    lq = np.log(q).astype(np.float32)  # as the model gives them
    proxy = rng.normal(size=q.shape).astype(np.float32)
    one = exact.best_of_n_log_probs(lq, proxy, 1)
    assert abs(exact.kl(one, lq)) < 1e-9
    ns = np.array([2, 16, 1024, 65536])
    kls = np.array([exact.kl(exact.best_of_n_log_probs(lq, proxy, n), lq) for n in ns])
    assert np.all(kls <= exact.best_of_n_kl_bound(ns) + 1e-9)
    # An independent reference: F_i^n - F_(i-1)^n from a plain float64 cumulative sum, row 0
    qn = np.exp(exact.normalised(lq))[0]
    order = np.argsort(proxy[0], kind="stable")
    f = np.cumsum(qn[order])
    ref = np.zeros_like(qn)
    ref[order] = f**16 - np.concatenate([[0.0], f[:-1]]) ** 16
    got = np.exp(exact.best_of_n_log_probs(lq, proxy, 16))[0]
    assert np.allclose(got, ref, rtol=1e-8, atol=1e-15) and got.sum() == pytest.approx(1.0, abs=1e-12)
