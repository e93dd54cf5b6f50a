"""``tailgym.stats``: t quantiles against published values and closed forms, and the paired
intervals on cases small enough to check by hand."""
import math

import numpy as np
import pytest

from tailgym import stats
from tailgym.stats import mean_interval, paired_difference, paired_ratio, real, t_quantile

T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 9: 2.262, 10: 2.228, 19: 2.093,
        29: 2.045, 30: 2.042, 60: 2.000, 120: 1.980}  # the 0.975 column of a t table


@pytest.mark.parametrize("df, value", T975.items())
def test_t_quantiles_match_a_printed_table(df, value):
    assert t_quantile(0.975, df) == pytest.approx(value, abs=5e-4)


@pytest.mark.parametrize("q", [0.6, 0.9, 0.95, 0.975, 0.995, 0.9995])
def test_t_quantiles_match_the_closed_forms_of_1_and_2_df(q):
    assert t_quantile(q, 1) == pytest.approx(math.tan(math.pi * (q - 0.5)), rel=1e-12)
    assert t_quantile(q, 2) == pytest.approx((2 * q - 1) / math.sqrt(2 * q * (1 - q)), rel=1e-12)


def test_t_quantiles_other_levels_symmetry_and_the_normal_limit():
    assert t_quantile(0.995, 5) == pytest.approx(4.032, abs=5e-4)
    assert t_quantile(0.95, 10) == pytest.approx(1.812, abs=5e-4)
    assert t_quantile(0.025, 4) == -t_quantile(0.975, 4)
    assert t_quantile(0.5, 7) == pytest.approx(0.0, abs=1e-12)
    assert t_quantile(0.975, math.inf) == pytest.approx(1.959964, abs=1e-6)
    assert t_quantile(0.975, 1e6) == pytest.approx(1.959964, abs=1e-5)
    assert stats.t_cdf(t_quantile(0.9, 3.5), 3.5) == pytest.approx(0.9, abs=1e-12)
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_quantile(0.975, 0)
    with pytest.raises(ValueError, match="quantile level"):
        t_quantile(1.0, 3)


def test_mean_interval_by_hand_and_one_that_includes_zero():
    ci = mean_interval([1.0, 2.0, 3.0])              # mean 2, sd 1, n 3
    half = 4.302653 / math.sqrt(3)                   # = 2.484: the interval crosses 0
    assert (ci.estimate, ci.n) == (2.0, 3)
    assert (ci.lo, ci.hi) == pytest.approx((2 - half, 2 + half), abs=1e-6)
    assert not ci.real and ci.lo < 0 < ci.hi


def test_paired_difference_that_excludes_zero():
    x, y = [3.9, 5.0, 6.1], [2.0, 3.0, 4.0]          # differences 1.9, 2, 2.1: sd 0.1
    ci = paired_difference(x, y)
    half = 4.302653 * 0.1 / math.sqrt(3)             # = 0.248
    assert ci.estimate == pytest.approx(2.0)
    assert (ci.lo, ci.hi) == pytest.approx((2 - half, 2 + half), abs=1e-6)
    assert ci.real
    assert paired_difference(y, x).real and paired_difference(y, x).hi < 0
    unpaired = mean_interval(x)                      # the same values seen unpaired: sd 1.1
    assert unpaired.hi - unpaired.lo > 10 * (ci.hi - ci.lo)


def test_two_values_use_t_with_one_df():
    ci = mean_interval([2.0, 4.0])                   # sd/sqrt(n) = |x1 - x2| / 2 = 1
    assert (ci.lo, ci.hi) == pytest.approx((3 - 12.706205, 3 + 12.706205), abs=1e-6)


def test_paired_ratio_is_on_the_log_scale():
    ci = paired_ratio([2.0, 4.4, 6.0], [1.0, 2.0, 3.0])  # ratios 2, 2.2, 2
    logs = np.log([2.0, 2.2, 2.0])
    half = 4.302653 * logs.std(ddof=1) / math.sqrt(3)
    assert ci.estimate == pytest.approx((2 * 2.2 * 2) ** (1 / 3) - 1)  # geometric mean - 1
    assert (ci.lo, ci.hi) == pytest.approx((math.exp(logs.mean() - half) - 1,
                                            math.exp(logs.mean() + half) - 1), rel=1e-6)
    assert ci.real and ci.lo > 0.8
    inverse = paired_ratio([1.0, 2.0, 3.0], [2.0, 4.4, 6.0])  # symmetric: 1/(1+x) - 1
    assert 1 + inverse.estimate == pytest.approx(1 / (1 + ci.estimate))
    assert 1 + inverse.hi == pytest.approx(1 / (1 + ci.lo)) and inverse.real
    noisy = paired_ratio([1.1, 0.8, 1.3], [1.0, 1.0, 1.0])
    assert noisy.lo < 0 < noisy.hi and not noisy.real and noisy.lo > -1


def test_no_interval_from_one_value_or_bad_values():
    for ci in (mean_interval([5.0]), paired_difference([3.0], [1.0]), paired_ratio([3.0], [1.0])):
        assert math.isnan(ci.lo) and math.isnan(ci.hi) and not ci.real and not ci.has_interval
    assert paired_difference([3.0], [1.0]).estimate == 2.0
    assert paired_ratio([3.0], [1.0]).estimate == pytest.approx(2.0)
    assert math.isnan(paired_ratio([1.0, 0.0], [1.0, 1.0]).estimate)      # log of 0
    assert math.isnan(mean_interval([1.0, np.nan, 2.0]).lo)
    assert math.isnan(mean_interval([]).estimate)
    with pytest.raises(ValueError, match="one of each per seed"):
        paired_difference([1.0, 2.0], [1.0])


@pytest.mark.parametrize("lo, hi, expected", [(0.1, 2.0, True), (-3.0, -0.5, True),
                                              (-0.1, 0.1, False), (0.0, 1.0, False),
                                              (np.nan, np.nan, False)])
def test_real_means_the_interval_excludes_zero(lo, hi, expected):
    assert real(lo, hi) is expected
