"""Paired statistics against independent references: enumeration by itertools, scipy's
t-test, a Monte Carlo power estimate, and the published floor of the 5-seed sign-flip test."""

import itertools

import numpy as np
import pytest
from scipy import stats

from experiments import statistics


def brute_force_sign_flip(d):
    observed = abs(sum(d))
    hits = sum(abs(sum(s * v for s, v in zip(signs, d))) >= observed - 1e-12
               for signs in itertools.product((-1, 1), repeat=len(d)))
    return hits / 2 ** len(d)


@pytest.mark.parametrize("n", [2, 5, 7, 17])
def test_sign_flip_p_value_matches_enumeration(n):
    d = np.random.default_rng(n).normal(0.3, 1.0, n)
    assert statistics.sign_flip_p_value(d) == pytest.approx(brute_force_sign_flip(d), abs=1e-12)


def test_five_seeds_resolve_only_when_every_seed_agrees():
    """5 seeds cannot reach p < 0.05 (at best 2 / 32); the verdict then asks for that best."""
    assert statistics.sign_flip_p_value([0.1, 0.2, 0.3, 0.4, 0.5]) == 2 / 32
    assert statistics.paired([-0.1, -0.2, -0.3, -0.4, -0.5]).resolved
    assert not statistics.paired([-0.1, -0.2, -0.3, -0.4, 0.01]).resolved  # p = 4 / 32
    assert not statistics.paired([-0.1, 0.2, -0.3, 0.4, -0.5]).resolved
    assert not statistics.paired([-0.1, -0.2, -0.3, -0.4, -0.5, 0.01]).resolved  # 6 seeds: p = 4 / 64


def test_t_interval_matches_scipy():
    d = np.random.default_rng(1).normal(-0.2, 0.3, 20)
    result = statistics.paired(d)
    interval = stats.ttest_1samp(d, 0.0).confidence_interval(0.95)
    assert (result.low, result.high) == pytest.approx((interval.low, interval.high), rel=1e-10)
    assert result.mean == pytest.approx(d.mean())


def test_a_clear_difference_is_resolved_with_its_sign():
    d = np.random.default_rng(2).normal(-1.0, 0.3, 12)
    result = statistics.paired(d)
    assert result.resolved and result.high < 0 and result.sign_flip_p < 0.05


def test_the_smallest_detectable_difference_has_80_percent_power():
    n, sd = 20, 0.4
    delta = statistics.smallest_detectable_difference(sd, n)
    samples = np.random.default_rng(3).normal(delta, sd, (20_000, n))
    rejected = stats.ttest_1samp(samples, 0.0, axis=1).pvalue < 0.05
    assert rejected.mean() == pytest.approx(0.8, abs=0.015)
    # the normal approximation (z_0.975 + z_0.8) sd / sqrt(n) is a little smaller
    assert 2.80 * sd / np.sqrt(n) < delta < 1.1 * 2.80 * sd / np.sqrt(n)


def test_fewer_than_two_seeds_is_refused():
    with pytest.raises(ValueError, match="at least 2 seeds"):
        statistics.paired([0.1])


def test_mcnemar_counts_discordant_examples_and_matches_the_binomial_sum():
    a = np.array([1, 1, 1, 1, 1, 1, 1, 0, 0, 1], bool)
    b = np.array([0, 0, 0, 0, 0, 0, 1, 1, 0, 1], bool)  # A alone right on 6, B alone on 1
    result = statistics.mcnemar(a, b)
    assert (result.only_a, result.only_b) == (6, 1)
    # two-sided exact: 2 P(X <= 1), X ~ Binomial(7, 1/2) = 2 (1 + 7) / 128
    assert result.p == pytest.approx(16 / 128)
    assert statistics.mcnemar(a, a).p == 1.0


def test_correctness_survives_packing_for_any_count():
    from experiments import records

    rng = np.random.default_rng(0)
    for n in (1, 7, 8, 9, 10_000):
        predicted, labels = rng.integers(0, 3, n), rng.integers(0, 3, n)
        packed = records.pack_correct(predicted, labels)
        np.testing.assert_array_equal(records.unpack_correct(packed, n), predicted == labels)


def test_equivalence_is_two_one_sided_t_tests_within_the_margin():
    differences = np.array([0.12, -0.05, 0.30, 0.01, 0.18, -0.10])
    for margin in (0.1, 0.3, 0.6):
        result = statistics.equivalence(differences, margin)
        above = stats.ttest_1samp(differences, -margin, alternative="greater").pvalue
        below = stats.ttest_1samp(differences, margin, alternative="less").pvalue
        assert result.p == pytest.approx(max(above, below), rel=1e-9)
        assert result.equivalent == (max(above, below) < 0.05)
        # equivalent exactly when the t 90 % interval lies inside the margin
        assert result.equivalent == (-margin < result.low and result.high < margin)
    assert not statistics.equivalence(differences, 0.1).equivalent
    assert statistics.equivalence(differences, 0.6).equivalent


def test_the_bootstrap_of_one_seed_is_the_test_sets_sampling_alone():
    """With one seed, drawing seeds changes nothing: the interval is the sampling of the
    examples, whose standard error is sqrt(var(d) / N) for the per-example differences d."""
    rng = np.random.default_rng(3)
    a, b = rng.random((1, 20_000)) < 0.90, rng.random((1, 20_000)) < 0.88
    low, high = statistics.bootstrap_error_difference(a, b, replicates=4000)
    d = (~a[0]).astype(float) - (~b[0]).astype(float)
    center, error = d.mean(), d.std() / np.sqrt(d.size)
    assert low == pytest.approx(center - 1.96 * error, abs=0.2 * error)
    assert high == pytest.approx(center + 1.96 * error, abs=0.2 * error)
    assert statistics.bootstrap_error_difference(a, a) == (0.0, 0.0)


def test_the_bootstrap_widens_the_interval_by_the_spread_of_the_seeds():
    rng = np.random.default_rng(4)
    a = rng.random((6, 5000)) < 0.9
    b = np.stack([rng.random(5000) < p for p in (0.85, 0.87, 0.89, 0.91, 0.93, 0.95)])
    low, high = statistics.bootstrap_error_difference(a, b)
    one_seed = statistics.bootstrap_error_difference(a[:1], b[:1])
    assert high - low > 2 * (one_seed[1] - one_seed[0]) / np.sqrt(6)
