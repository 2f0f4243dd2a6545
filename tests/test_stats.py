"""The statistics against hand-computed and textbook values."""
from __future__ import annotations

import math

import pytest

from stages.stats import holm_adjust, mcnemar_exact_p, mean_interval, t_quantile, t_two_sided_cdf, wilson_interval


def test_wilson_interval_matches_the_formula_by_hand():
    # 8 of 10, z = 1.959964: centre (0.8 + z^2/20) / (1 + z^2/10) = 0.71660, half-width 0.22671
    assert wilson_interval(8, 10) == pytest.approx((0.49016, 0.94332), abs=1e-5)
    # 450 of 500: centre 0.903842 / 1.007683 = 0.896950, half 1.945021 * sqrt(0.00018 + 0.0000038415) = 0.026372
    assert wilson_interval(450, 500) == pytest.approx((0.870578, 0.923322), abs=2e-6)
    low, high = wilson_interval(9000, 10000)  # the example: 90% of 10,000, +- about 0.6 points
    assert (low, high) == pytest.approx((0.893965, 0.905727), abs=2e-6)


def test_wilson_interval_edges():
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-5)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(10, 10)[0] == pytest.approx(1 - 0.27753, abs=1e-5)  # symmetric
    assert wilson_interval(0, 0) == (0.0, 1.0)  # a class without test images says nothing
    with pytest.raises(ValueError, match="successes must be in 0..n, got 11 of 10"):
        wilson_interval(11, 10)


@pytest.mark.parametrize("b, c, p", [
    (0, 0, 1.0),
    (0, 5, 2 / 32),             # 2 * C(5,0) / 2^5
    (1, 4, 2 * (1 + 5) / 32),   # 0.375
    (4, 1, 0.375),              # symmetric
    (2, 8, 2 * (1 + 10 + 45) / 1024),  # 0.109375
    (3, 3, 1.0),                # 2 * P(X <= 3 | n = 6) = 2 * 42/64 > 1, capped
    (0, 20, 2 / 2**20),
])
def test_mcnemar_exact_p_small_tables(b, c, p):
    assert mcnemar_exact_p(b, c) == pytest.approx(p, rel=1e-12)


def test_mcnemar_exact_p_large_counts_are_exact_and_near_the_normal_approximation():
    z = (1000 - 900 - 1) / math.sqrt(1900)  # normal approximation with continuity correction: p = 0.02313
    assert mcnemar_exact_p(900, 1000) == pytest.approx(math.erfc(z / math.sqrt(2)), rel=0.01)
    assert mcnemar_exact_p(5000, 5000) == 1.0


def test_holm_adjust_orders_steps_down_and_stays_monotone():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 -> 0.02, 0.03, 0.06, 0.04 -> monotone: 0.06 for the last
    assert holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_adjust([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm_adjust([]) == []
    # at alpha 0.05 Holm rejects the smallest of ten only below 0.005 (Bonferroni's bound for the first step)
    ten = [0.004] + [0.9] * 9
    assert holm_adjust(ten)[0] == pytest.approx(0.04)
    assert holm_adjust([0.006] + [0.9] * 9)[0] > 0.05


@pytest.mark.parametrize("df, t", [(1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (9, 2.2622),
                                   (10, 2.2281), (30, 2.0423)])
def test_t_quantile_matches_the_printed_table(df, t):
    assert t_quantile(0.95, df) == pytest.approx(t, abs=5e-5)


def test_t_distribution_tends_to_the_normal():
    assert t_two_sided_cdf(1.959964, 100_000) == pytest.approx(0.95, abs=1e-5)
    assert t_quantile(0.95, 1000) == pytest.approx(1.9623, abs=1e-4)  # printed tables: 1.962
    assert t_two_sided_cdf(0.0, 3) == 0.0
    with pytest.raises(ValueError, match="degrees of freedom must be >= 1"):
        t_two_sided_cdf(1.0, 0)


def test_mean_interval_by_hand():
    mean, sd, low, high = mean_interval([0.50, 0.52, 0.54])
    assert (mean, sd) == pytest.approx((0.52, 0.02))
    half = 4.3027 * 0.02 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert (low, high) == pytest.approx((0.52 - half, 0.52 + half), abs=1e-5)
    mean, sd, low, high = mean_interval([0.7])
    assert mean == 0.7 and math.isnan(sd) and math.isnan(low) and math.isnan(high)
