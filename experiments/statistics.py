"""Paired comparisons of two losses over seeds: interval, exact test, power and verdict.

The seeds pair the models (same initialization and data order), so the unit of analysis is the
per-seed difference ``d_s = metric(A, s) - metric(B, s)``:

- the mean difference with its t 95 % interval, ``mean +- t_{0.975, n-1} sd / sqrt(n)``;
- the exact two-sided sign-flip permutation p-value: under "no difference" each ``d_s`` is as
  likely to have either sign, and all ``2^n`` sign patterns are enumerated;
- the smallest difference the design detects with 80 % power: the ``delta`` at which the
  two-sided paired t-test at level 0.05 rejects with probability 0.8 (noncentral t with
  ``n - 1`` degrees of freedom and noncentrality ``delta sqrt(n) / sd``), from the measured sd;
- the verdict: "A lower" or "B lower" when the t interval excludes 0 and the sign-flip p-value
  is below 0.05 or, for n <= 5 seeds, which cannot reach 0.05, as small as they allow
  (``2 / 2^n``, 0.0625 at n = 5: every seed agrees in sign); else "not resolved".

Over test examples, for one seed's pair of models: the exact McNemar test on the examples
that exactly one of the two classifies correctly (``mcnemar``).

Where a difference is not resolved: two one-sided t tests of equivalence within a stated
margin (``equivalence``), so that "not resolved" reads "equivalent" or "inconclusive"; and
for the error, an interval that also covers the sampling of the test set, a bootstrap over
seeds and test examples (``bootstrap_error_difference``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import optimize, stats

LEVEL = 0.05
POWER = 0.8
MAX_EXACT_SEEDS = 24  # 2^24 sign patterns


class Paired(NamedTuple):
    seeds: int
    mean: float
    low: float  # t 95 % interval
    high: float
    sign_flip_p: float
    detectable: float  # smallest difference detected with 80 % power; nan if sd is 0 or n < 2
    resolved: bool


def _signed_sums(magnitudes: np.ndarray) -> np.ndarray:
    """``sum_i s_i m_i`` for every sign pattern ``s`` in {-1, +1}^n."""
    patterns = np.arange(2 ** magnitudes.size)[:, None] >> np.arange(magnitudes.size) & 1
    return (1 - 2 * patterns) @ magnitudes


def sign_flip_p_value(differences) -> float:
    """Exact two-sided p-value: the share of the ``2^n`` sign patterns whose |sum| is at least
    the observed |sum| (the patterns of the first 16 seeds against each of the rest's)."""
    d = np.asarray(differences, np.float64)
    if d.size > MAX_EXACT_SEEDS:
        raise ValueError(f"{d.size} seeds: the exact sign-flip test enumerates at most 2^{MAX_EXACT_SEEDS}")
    observed = abs(d.sum()) * (1 - 1e-12)  # float round-off must not drop the observed pattern
    first, rest = _signed_sums(np.abs(d[:16])), _signed_sums(np.abs(d[16:]))
    extreme = sum(np.count_nonzero(np.abs(first + r) >= observed) for r in rest)
    return extreme / 2.0 ** d.size


def smallest_detectable_difference(sd: float, n: int, level: float = LEVEL,
                                   power: float = POWER) -> float:
    """The difference the two-sided paired t-test at ``level`` detects with ``power``."""
    if n < 2 or not sd > 0:
        return float("nan")
    df, critical = n - 1, stats.t.ppf(1 - level / 2, n - 1)

    def power_minus_target(noncentrality):  # scipy's lower tail is NaN where it is ~0
        lower_tail = np.nan_to_num(stats.nct.cdf(-critical, df, noncentrality))
        return stats.nct.sf(critical, df, noncentrality) + lower_tail - power

    return float(optimize.brentq(power_minus_target, 0.0, 60.0)) * sd / np.sqrt(n)


def paired(differences) -> Paired:
    """The paired analysis of per-seed differences (at least 2)."""
    d = np.asarray(differences, np.float64)
    n = d.size
    if n < 2:
        raise ValueError(f"a paired comparison needs at least 2 seeds, got {n}")
    mean, sd = d.mean(), d.std(ddof=1)
    half = stats.t.ppf(1 - LEVEL / 2, n - 1) * sd / np.sqrt(n)
    p = sign_flip_p_value(d)
    smallest_p = 2.0 / 2 ** n  # every difference of one sign
    resolved = bool((mean - half > 0 or mean + half < 0) and (p < LEVEL or p <= smallest_p))
    return Paired(n, float(mean), float(mean - half), float(mean + half), p,
                  smallest_detectable_difference(sd, n), resolved)


class McNemar(NamedTuple):
    only_a: int  # examples A classifies correctly and B does not
    only_b: int
    p: float  # exact two-sided: only_a ~ Binomial(only_a + only_b, 1/2) under "no difference"


def mcnemar(correct_a, correct_b) -> McNemar:
    """The exact McNemar test of two classifiers on the same examples (boolean arrays)."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b.shape:
        raise ValueError(f"correctness of different shapes: {a.shape} and {b.shape}")
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    p = 1.0 if only_a + only_b == 0 else stats.binomtest(only_a, only_a + only_b).pvalue
    return McNemar(only_a, only_b, float(p))


class Equivalence(NamedTuple):
    margin: float
    low: float  # the t 90 % interval: inside (-margin, margin) exactly when equivalent
    high: float
    p: float  # the larger of the two one-sided p-values
    equivalent: bool


def equivalence(differences, margin: float) -> Equivalence:
    """Two one-sided t tests (TOST) at level 0.05 of "the mean difference lies outside
    ``(-margin, margin)``": both ``mean + margin > 0`` and ``mean - margin < 0`` are tested
    one-sidedly; equivalence is claimed when both reject, that is, when the t 90 % interval
    lies inside the margin."""
    d = np.asarray(differences, np.float64)
    n, mean, sd = d.size, d.mean(), d.std(ddof=1)
    error = sd / np.sqrt(n)
    if not error > 0:
        inside = abs(mean) < margin
        return Equivalence(margin, mean, mean, 0.0 if inside else 1.0, bool(inside))
    p = max(stats.t.sf((mean + margin) / error, n - 1), stats.t.cdf((mean - margin) / error, n - 1))
    half = stats.t.ppf(1 - LEVEL, n - 1) * error
    return Equivalence(margin, float(mean - half), float(mean + half), float(p), bool(p < LEVEL))


def bootstrap_error_difference(correct_a, correct_b, replicates: int = 4000,
                               seed: int = 0) -> tuple[float, float]:
    """A 95 % percentile interval of ``error(A) - error(B)`` that covers both the seeds and the
    test set's sampling: each replicate draws the seeds with replacement and, within each
    drawn seed, the test examples with replacement (the same examples for both models).
    ``correct_a``, ``correct_b``: (seeds, examples) booleans. Drawing examples is drawn as the
    multinomial counts of the per-example differences -1, 0 and +1, which is the same law."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    seeds, examples = a.shape
    # per seed, the shares of examples where only B is right (+1 to A's error), only A (-1)
    shares = np.stack([np.mean(~a & b, 1), np.mean(a & ~b, 1)], 1)
    shares = np.concatenate([shares, np.clip(1 - shares.sum(1, keepdims=True), 0, None)], 1)
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, seeds, (replicates, seeds))
    counts = np.stack([rng.multinomial(examples, shares[s]) for s in drawn.ravel()])
    differences = (counts[:, 0] - counts[:, 1]).reshape(replicates, seeds) / examples
    return tuple(float(q) for q in np.quantile(differences.mean(1), [0.025, 0.975]))
