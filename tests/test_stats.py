"""Statistics across tasks (purejaxppo/scale/stats.py) against hand-worked numbers and exact enumeration."""

import itertools

import numpy as np
import pytest

from purejaxppo.scale.stats import bootstrap_ci, iqm, performance_profile, stratified_bootstrap_ci


def test_iqm_by_hand():
    assert iqm(np.arange(1, 9)) == 4.5  # middle half of 1..8: 3, 4, 5, 6
    assert iqm([[10.0, 0.0], [1.0, 2.0]]) == 1.5  # runs 0, 1, 2, 10: middle 1, 2
    assert iqm([3.0, 1.0, 2.0]) == 2.0  # floor(0.75) = 0 cut: the plain mean
    assert iqm(np.r_[np.arange(1, 9), 1000.0]) == pytest.approx(np.mean([3, 4, 5, 6, 7]))  # 9 runs: 2 cut each side


def test_performance_profile_by_hand():
    scores = np.array([[0.0, 0.5], [1.0, 2.0]])
    np.testing.assert_allclose(performance_profile(scores, np.array([-1.0, 0.0, 0.5, 1.5, 2.0])),
                               [1.0, 0.75, 0.5, 0.25, 0.0])


def test_stratified_bootstrap_matches_exact_enumeration():
    # 2 tasks x 2 seeds: each resample picks 2 of 2 seeds per task with replacement, 4 x 4 = 16
    # equally likely resamples. The bootstrap's percentiles must approach those of the exact set.
    scores = np.array([[0.0, 1.0], [2.0, 6.0]])
    exact = []
    for a in itertools.product(range(2), repeat=2):
        for b in itertools.product(range(2), repeat=2):
            exact.append(np.mean([scores[0, list(a)], scores[1, list(b)]]))
    lo, hi = np.percentile(exact, [2.5, 97.5], method="inverted_cdf")  # quantiles of the exact distribution
    assert (lo, hi) == (1.0, 3.5)  # by hand: (0 + 2) / 2 and (1 + 6) / 2, each with probability 1/16
    assert stratified_bootstrap_ci(scores, statistic=np.mean, n=20000, key=1) == pytest.approx((lo, hi), abs=1e-9)
    # and the middle of the distribution: the median resample mean is 2.25 exactly
    assert np.median(exact) == 2.25


def test_stratified_bootstrap_never_mixes_tasks():
    # seeds of one task all equal: every resample is the same, the interval has no width
    scores = np.array([[1.0, 1.0, 1.0], [5.0, 5.0, 5.0], [9.0, 9.0, 9.0]])
    assert stratified_bootstrap_ci(scores, n=200) == (5.0, 5.0)
    with pytest.raises(ValueError, match="tasks, seeds"):
        stratified_bootstrap_ci(np.zeros(3))


def test_bootstrap_ci_of_one_value_and_of_nans():
    assert bootstrap_ci(np.array([3.0])) == (3.0, 3.0)
    assert all(np.isnan(bootstrap_ci(np.array([np.nan]))))
