"""GRPO, RLOO and reward-model ensembles against hand-worked numbers and exact enumeration.
(Trained in the study: tests/test_rlhf.py.)"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxppo.rlhf import exact, group, ppo, reward
from purejaxppo.rlhf import model as seqmodel
from purejaxppo.rlhf.methods import stack_rows
from purejaxppo.rlhf.task import TaskSpec, make_task


# ---- advantages and baselines, by hand -------------------------------------------------------
def test_group_advantages_hand_worked():
    # r = (1, 2, 3, 6): mean 3, sample std sqrt((4 + 1 + 0 + 9) / 3) = sqrt(14 / 3)
    got = np.asarray(group.group_advantages(jnp.array([[1.0, 2.0, 3.0, 6.0], [5.0, 5.0, 5.0, 5.0]])))
    s = math.sqrt(14 / 3)
    assert np.allclose(got[0], [-2 / s, -1 / s, 0.0, 3 / s], atol=1e-6)
    assert np.allclose(got[1], 0.0)  # a group of equal rewards teaches nothing


def test_leave_one_out_baseline_hand_worked():
    r = jnp.array([[1.0, 2.0, 3.0, 6.0]])
    # each response's baseline is the mean of the other three: (11/3, 10/3, 9/3, 6/3)
    assert np.allclose(np.asarray(group.leave_one_out_baseline(r))[0], [11 / 3, 10 / 3, 3.0, 2.0], atol=1e-6)
    adv = np.asarray(group.leave_one_out_advantages(r))[0]
    assert np.allclose(adv, [-8 / 3, -4 / 3, 0.0, 4.0], atol=1e-6)
    assert np.allclose(adv, 4 / 3 * (np.array([1, 2, 3, 6]) - 3.0), atol=1e-6)  # k/(k-1) (r - mean)


def test_k3_estimator_hand_worked():
    # d = log ref - log pi = log(0.5) - log(0.25) = log 2: exp(d) - d - 1 = 1 - log 2
    got = float(group.k3_kl(jnp.log(jnp.array(0.25)), jnp.log(jnp.array(0.5))))
    assert got == pytest.approx(1 - math.log(2), rel=1e-6)
    assert float(group.k3_kl(jnp.array(-1.3), jnp.array(-1.3))) == 0.0


# ---- the KL estimator's expectation is the exact KL ------------------------------------------------
@pytest.fixture(scope="module")
def two_models():
    model = seqmodel.make_model(3, 2, 3, seqmodel.ModelSpec(width=16, layers=1, heads=2))
    sharpen = lambda p: jax.tree_util.tree_map(lambda x: 3 * x, p)
    return model, sharpen(seqmodel.init_params(model, jax.random.key(0))), sharpen(seqmodel.init_params(model, jax.random.key(1)))


def test_k3_summed_over_tokens_has_the_exact_kl_as_expectation(two_models):
    model, pi, ref = two_models
    prompts, responses = exact.grid(2, 3, 3)  # every response of both prompts: [2, 27]
    lp = seqmodel.token_log_probs(model, pi, prompts, responses)  # [2, 27, 3]
    lq = seqmodel.token_log_probs(model, ref, prompts, responses)
    per_response = np.asarray(jnp.sum(group.k3_kl(lp, lq), axis=-1), np.float64)
    seq_lp = np.asarray(jnp.sum(lp, axis=-1), np.float64)
    exact_kl = exact.kl(seq_lp, np.asarray(jnp.sum(lq, axis=-1)))
    assert exact_kl > 0.05  # the comparison has teeth
    assert exact.expectation(seq_lp, per_response) == pytest.approx(exact_kl, rel=1e-5)
    # and by sampling from pi: within 4 standard errors
    n = 20_000
    x = jnp.zeros((n,), jnp.int32)
    ys = seqmodel.sample(model, pi, jax.random.key(2), x)
    k3 = np.asarray(jnp.sum(group.k3_kl(seqmodel.token_log_probs(model, pi, x, ys),
                                        seqmodel.token_log_probs(model, ref, x, ys)), axis=-1))
    kl0 = exact.kl(seq_lp[:1], np.asarray(jnp.sum(lq, axis=-1))[:1])
    assert abs(k3.mean() - kl0) < 4 * k3.std() / math.sqrt(n)


# ---- ensembles ------------------------------------------------------------------------------------
def test_ensemble_objectives_hand_worked():
    s = jnp.array([[1.0, 0.0], [2.0, 0.0], [6.0, 3.0]])  # 3 members, 2 responses
    mean, std = np.array([3.0, 1.0]), np.array([np.std([1, 2, 6]), np.std([0, 0, 3])])
    assert np.allclose(np.asarray(reward.combine(s, 0.0, 0.0)), mean)
    assert np.allclose(np.asarray(reward.combine(s, 0.5, 0.0)), mean - 0.5 * std, atol=1e-6)
    assert np.allclose(np.asarray(reward.combine(s, 0.5, 1.0)), [1.0, 0.0])  # worst case
    assert float(reward.spread(s)) == pytest.approx(std.mean(), rel=1e-6)
    one = jnp.array([[0.7, -1.2]])
    for pen, worst in ((0.0, 0.0), (2.0, 0.0), (0.0, 1.0)):  # one member: its own score, bit for bit
        assert np.array_equal(np.asarray(reward.combine(one, pen, worst)), np.asarray(one[0]))


# ---- GRPO and RLOO: one compiled program each, vmapped over betas -------------------------------------
@pytest.fixture(scope="module")
def micro():
    spec = TaskSpec(n_tokens=3, n_prompts=2, length=3)
    task = make_task(spec)
    model = seqmodel.make_model(3, 2, 3, seqmodel.ModelSpec(width=8, layers=1, heads=1))
    sft_params = seqmodel.init_params(model, jax.random.key(0))
    members = [seqmodel.init_params(model, jax.random.key(i)) for i in (1, 2)]
    rms = reward.RewardModel(jax.tree_util.tree_map(lambda *x: jnp.stack(x), *members), jnp.zeros(2), jnp.ones(2))
    return spec, task, model, sft_params, rms


def test_group_trainer_vmaps_over_betas_and_ensemble_objectives(micro, name="grpo"):
    # (RLOO, the other bundle, trains in the study: tests/test_rlhf.py)
    spec, task, model, sft_params, rms = micro
    settings = group.GroupSettings(iterations=2, prompts=4, group=4, epochs=2, minibatches=2)
    train = group.make_train(model, group.ALGORITHMS[name], settings, spec, ppo.Frozen(sft_params, rms, task), sft_params)
    h = stack_rows([group.GroupHParams(kl_coef=0.0, kl_horizon=math.inf), group.GroupHParams(kl_coef=1.0),
                    group.GroupHParams(kl_coef=1.0, ensemble_worst=1.0)])
    _, m = jax.jit(jax.vmap(train, (None, 0)))(jax.random.key(0), h)
    assert m.kl.shape == (3, 2) and all(np.all(np.isfinite(np.asarray(x))) for x in m)
    assert float(jnp.max(m.first_ratio_dev)) < 1e-5  # each iteration's first minibatch sees ratio 1
    assert abs(float(m.kl[0, 0])) < 1e-5 and float(jnp.min(m.spread)) > 0  # two members disagree
    assert float(m.kl_coef[0, 1]) == 0.0 and float(m.kl_coef[1, 1]) != 1.0  # fixed stays, adaptive moves
    assert float(m.proxy[2, 0]) < float(m.proxy[1, 0])  # the minimum is below the mean (same samples)


def test_bad_group_settings_are_one_line_errors(micro):
    from purejaxppo.errors import ConfigError

    spec, task, model, sft_params, rms = micro
    frozen = ppo.Frozen(sft_params, rms, task)
    for bad, message in (({"group": 1}, "group: got 1; accepted: an integer >= 2"),
                         ({"prompts": 3, "group": 3, "minibatches": 2}, "prompts * group = 9 is not divisible by minibatches=2")):
        with pytest.raises(ConfigError) as e:
            group.make_train(model, group.GRPO, group.GroupSettings(**bad), spec, frozen, sft_params)
        assert str(e.value) == message


# ---- comparisons: matched KL, Gao et al.'s forms, intervals over task seeds -----------------------------
def test_gold_at_matched_kl_hand_worked():
    from purejaxppo.rlhf import compare

    kl, gold = [0.0, 0.5, 2.0, 4.0, 3.0], [0.0, 0.4, 1.0, 0.6, 0.2]
    assert compare.gold_at_kl(kl, gold, 1.0) == pytest.approx(0.4 + (0.5 / 1.5) * 0.6)  # between 0.5 and 2
    assert compare.gold_at_kl(kl, gold, 3.0) == pytest.approx(0.8)  # the first crossing, on the way up
    assert compare.gold_at_kl(kl, gold, 10.0) is None
    assert compare.best_at_kl([(kl, gold), ([0.0, 2.0], [0.0, 2.0])], 1.0) == pytest.approx(1.0)
    o = compare.overoptimisation(kl, gold)
    assert (o["peak"], o["peak_kl"], o["drop"]) == (1.0, 2.0, pytest.approx(0.8))


@pytest.mark.parametrize("form", ["bon", "rl"])
def test_gao_fit_recovers_its_own_curve(form):
    from purejaxppo.rlhf import compare

    kl = np.linspace(0.0, 9.0, 30)
    d = np.sqrt(kl)
    second = d**2 if form == "bon" else d * np.log(np.where(d > 0, d, 1.0))
    gold = 0.1 + d * 0.8 - 0.3 * second  # alpha 0.8, beta 0.3, the reference's gold 0.1
    fit = compare.gao_fit(kl, gold, 0.1, form)
    assert fit["alpha"] == pytest.approx(0.8, abs=1e-9) and fit["beta"] == pytest.approx(0.3, abs=1e-9)
    assert fit["r2"] == pytest.approx(1.0) and fit["max_residual"] < 1e-9 and fit["points"] == 29
    noisy = compare.gao_fit(kl, gold + np.random.default_rng(0).normal(0, 0.05, kl.shape), 0.1, form)
    assert 0.5 < noisy["r2"] < 1.0


def test_seed_intervals_and_the_trap():
    from purejaxppo.rlhf import seeds

    mean, low, high = seeds.mean_interval([1.0, 2.0, 3.0, 4.0, None])
    assert mean == pytest.approx(2.5) and 1.0 <= low < 2.5 < high <= 4.0
    assert seeds.mean_interval([None]) is None and seeds.mean_interval([0.7]) == (0.7, 0.7, 0.7)
    front = {"kl": [0.0, 1.0, 5.0, 9.0], "gold": [0.0, 1.0, 1.3, 1.1]}
    t = seeds.trap({"ppo": {"frontier": front}})
    assert t["exists"] and t["drop"] == pytest.approx(0.2) and t["peak_kl"] == 5.0
    assert not seeds.trap({"ppo": {"frontier": {**front, "gold": [0.0, 1.0, 1.3, 1.25]}}})["exists"]
