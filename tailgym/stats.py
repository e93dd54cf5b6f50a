"""95% intervals for differences between policies, paired by seed or window.

Every comparison tailgym reports is paired: each seed (or window of a trace) is the same
workload draw for every policy, so the unit of replication is the seed and the statistic is
the per-seed difference. The interval is Student's t over those per-seed values,
``mean ± t_{(1+level)/2, n-1} sd / sqrt(n)``: exact when the per-seed values are normal, and
with the 3-10 seeds of a grid the honest choice (a bootstrap over 3 values undercovers badly;
t with 2 degrees of freedom is wide, t_{0.975,2} = 4.30, and says so).

- ``mean_interval(values)``: the mean of per-seed values (e.g. P99 TTLT of one policy).
- ``paired_difference(x, y)``: mean of ``x - y`` per seed, in the metric's units.
- ``paired_ratio(x, ref)``: a relative difference, ``x`` versus ``ref`` in per cent. Taken on
  the log scale: the interval of the mean per-seed ``log(x / ref)`` mapped back by
  ``exp(.) - 1``, so the estimate is the geometric mean of the per-seed ratios minus 1. Unlike
  the mean of per-seed ratios it is symmetric (``ratio(a, b)`` and ``ratio(b, a)`` are each
  other's inverse, and exclude 0 together), its bounds stay above -100%, and a latency ratio
  is closer to log-normal than to normal. It needs positive values (nan otherwise).
- ``real(lo, hi)``: the interval excludes 0, the only case in which tailgym's text calls a
  difference real. Intervals are per comparison, not adjusted for multiple comparisons.

Fewer than two values give no interval (``lo`` and ``hi`` nan, ``real`` False). The t
quantiles are computed here (numpy and the standard library only, no scipy): the t CDF through
the regularized incomplete beta function (a continued fraction) inverted by bisection, to
about 1e-12.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

import numpy as np

LEVEL = 0.95


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= c * d
        if abs(c * d - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` > 0 degrees of freedom."""
    if math.isinf(df):
        return NormalDist().cdf(t)
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))  # P(T > |t|)
    return 1.0 - tail if t > 0 else tail


@lru_cache(maxsize=256)
def t_quantile(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t with ``df`` > 0 degrees of freedom (``inf``: the
    normal), e.g. ``t_quantile(0.975, 2)`` = 4.3027."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile level must be in (0, 1), got {q!r}")
    if not df > 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df!r}")
    if math.isinf(df):
        return NormalDist().inv_cdf(q)
    if q < 0.5:
        return -t_quantile(1.0 - q, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < q:
        lo, hi = hi, 2.0 * hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if t_cdf(mid, df) < q else (lo, mid)
    return 0.5 * (lo + hi)


def real(lo: float, hi: float) -> bool:
    """True where the interval [lo, hi] excludes 0 (False for a missing, nan, interval)."""
    return bool(lo > 0.0 or hi < 0.0)


@dataclass(frozen=True)
class Interval:
    """An estimate with its ``level`` interval [lo, hi] over ``n`` paired values (lo and hi
    nan when n < 2 or a value is not finite)."""

    estimate: float
    lo: float
    hi: float
    n: int
    level: float = LEVEL

    @property
    def real(self) -> bool:
        """The interval excludes 0."""
        return real(self.lo, self.hi)

    @property
    def has_interval(self) -> bool:
        return bool(np.isfinite(self.lo) and np.isfinite(self.hi))


def mean_interval(values, level: float = LEVEL) -> Interval:
    """Student-t interval of the mean of ``values`` (one per seed or window)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    n = int(x.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, level)
    mean = float(x.mean())
    if n < 2 or not np.all(np.isfinite(x)):
        return Interval(mean, math.nan, math.nan, n, level)
    half = t_quantile(0.5 + level / 2.0, n - 1) * float(x.std(ddof=1)) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, level)


def _paired(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = (np.asarray(v, dtype=np.float64).ravel() for v in (x, y))
    if x.shape != y.shape:
        raise ValueError(f"paired values need one of each per seed, got {x.size} and {y.size}")
    return x, y


def paired_difference(x, y, level: float = LEVEL) -> Interval:
    """Interval of the mean per-seed difference ``x - y`` (x[i] and y[i] from one seed)."""
    x, y = _paired(x, y)
    return mean_interval(x - y, level)


def paired_ratio(x, ref, level: float = LEVEL) -> Interval:
    """Relative difference of ``x`` from ``ref`` (fractions: 0.1 = 10% above), paired by
    seed: the interval of the mean per-seed log ratio, mapped back by ``exp(.) - 1``; the
    estimate is the geometric mean of ``x[i] / ref[i]`` minus 1. nan where a value is not
    positive and finite."""
    x, ref = _paired(x, ref)
    positive = np.isfinite(x) & (x > 0) & np.isfinite(ref) & (ref > 0)
    if x.size == 0 or not positive.all():
        return Interval(math.nan, math.nan, math.nan, int(x.size), level)
    log = mean_interval(np.log(x) - np.log(ref), level)
    return Interval(*(math.expm1(v) for v in (log.estimate, log.lo, log.hi)), log.n, level)
