"""With one seat and a constant step time the engine is an M/G/1 queue: a request of ``s``
output tokens (a one-token prompt) needs exactly ``s`` steps. Mean response times against
Pollaczek-Khinchine (FCFS), Cobham (non-preemptive SJF) and Schrage-Miller (SRPT), and
gamma-Boost's tail decay against the Cramer-Lundberg root.

Tolerance: each check runs ``SEEDS`` independent seeded runs and asserts the formula lies in
the 99% t-interval of the per-seed estimates (``T99`` = t quantile, 9 degrees of freedom), so
it measures the sample size it has; the spread (about 1.3% of the mean for FCFS, less for the
others) keeps the intervals well apart from the other policies' values."""
import numpy as np
import pytest
from engine_helpers import linear_coef, simulate_arrays

from tailgym.engine import layout as L

STEP = 0.01                                   # seconds per engine step
SIZES = np.r_[np.arange(1, 21), np.arange(60, 201)]  # output tokens = steps of service
PROBS = np.r_[np.full(20, 0.8 / 20), np.full(141, 0.2 / 141)]
S = STEP * SIZES                              # service times, s
RHO = 0.7
LAM = RHO / (PROBS @ S)
SEEDS, N, WARMUP = 10, 20000, 1000
T99 = 3.25                                    # t_{0.995} with 9 degrees of freedom
ORACLE = dict(alpha_p=0.0, alpha_d=STEP)      # work = service time


def response_times(policy, args=None):
    """Per seed, response times of the requests after the warm-up."""
    out = []
    for seed in range(SEEDS):
        rng = np.random.default_rng(seed)
        arrival = np.cumsum(rng.exponential(1.0 / LAM, N))
        output = rng.choice(SIZES, N, p=PROBS)
        state, _ = simulate_arrays(arrival, np.ones(N, dtype=np.int64), output,
                                   linear_coef(const=STEP), policy, args, max_num_seqs=1,
                                   max_num_batched_tokens=512, num_gpu_blocks=20000,
                                   check=False)
        out.append((state.rf[:, L.DONE] - state.rf[:, L.ARRIVAL])[WARMUP:])
    return out


def in_interval(estimates, value):
    est = np.asarray(estimates)
    half = T99 * est.std(ddof=1) / np.sqrt(est.size)
    return abs(est.mean() - value) <= half, est.mean(), half


def pollaczek_khinchine():
    return PROBS @ S + LAM * (PROBS @ S**2) / (2 * (1 - RHO))


def cumulative_load():
    """Load of sizes <= S_k and < S_k (the classes of Cobham's formula)."""
    upto = np.cumsum(LAM * PROBS * S)
    return upto, np.r_[0.0, upto[:-1]]


def cobham():
    upto, below = cumulative_load()
    w0 = LAM * (PROBS @ S**2) / 2
    return PROBS @ (S + w0 / ((1 - below) * (1 - upto)))


def schrage_miller():
    """SRPT, ties in favour of the earlier request: wait for the work of sizes <= x (each
    remaining at most x) extended by arrivals smaller than x, then a residence during which
    only arrivals smaller than the remaining work preempt."""
    upto, below = cumulative_load()
    edges = np.r_[0.0, S]
    total = 0.0
    for k, x in enumerate(S):
        m2 = PROBS[:k + 1] @ S[:k + 1]**2 + x * x * PROBS[k + 1:].sum()
        wait = LAM * m2 / (2 * (1 - upto[k]) * (1 - below[k]))
        residence = np.sum(np.diff(edges[:k + 2]) / (1 - below[:k + 1]))
        total += PROBS[k] * (wait + residence)
    return total


@pytest.mark.parametrize("policy, args, formula", [
    ("fcfs", None, pollaczek_khinchine),
    ("sjf-oracle", ORACLE, cobham),
    ("srpt-oracle", ORACLE, schrage_miller),
])
def test_mean_response_time_matches_queueing_theory(policy, args, formula):
    ok, mean, half = in_interval([t.mean() for t in response_times(policy, args)], formula())
    assert ok, f"{policy}: simulated {mean:.4f} +- {half:.4f} s, formula {formula():.4f} s"


def test_the_formulas_tell_the_policies_apart():
    pk, cob, sm = pollaczek_khinchine(), cobham(), schrage_miller()
    assert pk > 1.5 * cob and cob > 1.3 * sm


def lundberg_root():
    """The positive root of ``g = lam (E[exp(g S)] - 1)``, by bisection."""
    lo, hi = 1e-9, 2 * (1 - RHO) / (LAM * (PROBS @ S**2))  # the root lies below hi
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if LAM * (PROBS @ np.exp(mid * S) - 1) < mid else (lo, mid)
    return 0.5 * (lo + hi)


def tail_decay(t, lo=0.9, hi=0.999):
    """Slope of ``-ln P(T > t)`` between the ``lo`` and ``hi`` quantiles (least squares)."""
    t = np.sort(t)
    ccdf = 1.0 - np.arange(t.size) / t.size
    sel = (ccdf <= 1 - lo) & (ccdf >= 1 - hi)
    return -np.polyfit(t[sel], np.log(ccdf[sel]), 1)[0]


def test_gamma_boost_tail_decays_at_the_lundberg_root():
    gamma = lundberg_root()
    runs = response_times("gamma-boost-oracle",
                          dict(gamma_mode="fixed", gamma=gamma, alpha_p=1e-9, alpha_d=STEP))
    ok, mean, half = in_interval([tail_decay(t) for t in runs], gamma)
    assert ok, f"decay {mean:.4f} +- {half:.4f} /s, Lundberg root {gamma:.4f} /s"
    assert tail_decay(np.concatenate(runs)) == pytest.approx(gamma, rel=0.03)
