"""Online statistics a prediction-free policy may use, kept in the ``pstate`` array.

Everything here is observable in a real engine: arrival times, and for completed requests
their prompt and output lengths and their response times. Ring buffers hold the most
recent ``WINDOW`` of each. ``gamma`` estimators (uniboost spec sections 2.4-2.5, 1.3):

* ``lundberg_gamma``: the Cramer-Lundberg root of ``gamma = lambda (E[exp(gamma S)] - 1)`` for
  the empirical size distribution of recent completions and the measured arrival rate, at
  least ``gamma_min``; overload (rho >= 1) has no root and returns ``gamma_min`` (the SJF
  side). A heavy tail (Hill index of the top ``HILL_SHARE`` of sizes below
  ``HEAVY_TAIL_INDEX``, infinite variance) has no exponential moment, so the true root is 0
  and the empirical one would only track the few largest samples: it returns
  ``gamma_heavy`` (UniBoost: ``gamma_min``; gittins-tail goes further to the SJF side). The
  boost stays capped by MemGuard's quantum, so old requests still win eventually.
  The Hill test needs a continuous tail: a top share made mostly of ties (an atom, e.g.
  identical requests or two-point sizes) is not a power law and counts as light.
* ``ada_target``: the SGLang port's gamma-Ada rule ``gamma_max / (1 + 4 max(t99/t95 - 1, 0))``
  on recent end-to-end latencies (heavy tail -> smaller gamma, more SJF), smoothed as SGLang
  does (``smooth_gamma_linear``) or in log gamma (``smooth_gamma``, also used by ``auto``).
"""
import math

import numpy as np

from ..jit import allocating, kernel

WINDOW = 2000          # completions (and arrivals) remembered
RATE_WINDOW = 500      # arrivals used for the rate estimate
MIN_SAMPLES = 200      # completions needed before estimating gamma
HILL_SHARE = 0.1       # share of the largest sizes the Hill estimator uses
HEAVY_TAIL_INDEX = 2.0 # a Hill tail index below this is treated as heavy-tailed
GRID = 24              # uniboost-dist table points: d = 0, k, 2k, 4k, ...

G_GAMMA = 0            # current gamma, 1/s
G_N_ARRIVALS = 1
G_N_DONE = 2
G_TABLE_READY = 3      # 1 once the uniboost-dist table holds data
HEADER = 8
ARRIVALS = HEADER                  # ring of arrival times
SIZES = ARRIVALS + WINDOW          # ring of completed requests' work, s
DECODES = SIZES + WINDOW           # ring of completed requests' output tokens
LATENCIES = DECODES + WINDOW       # ring of completed requests' TTLT, s
TABLE = LATENCIES + WINDOW         # uniboost-dist: ln M(d) on the grid
QUANTUM_LN_E = TABLE + GRID        # gittins-tail: ln E[exp(...) | S > d_g] for quantum b_j,
QUANTUM_P = QUANTUM_LN_E + GRID * GRID  # and P(S <= b_j | S > d_g), at [g * GRID + j]
PSTATE_SIZE = QUANTUM_P + GRID * GRID


def new_pstate(gamma: float) -> np.ndarray:
    p = np.zeros(PSTATE_SIZE)
    p[G_GAMMA] = gamma
    return p


@kernel
def record_arrival(pstate, now):
    n = int(pstate[G_N_ARRIVALS])
    pstate[ARRIVALS + n % WINDOW] = now
    pstate[G_N_ARRIVALS] = n + 1


@kernel
def record_completion(pstate, work_s, output_tokens, ttlt):
    n = int(pstate[G_N_DONE])
    pstate[SIZES + n % WINDOW] = work_s
    pstate[DECODES + n % WINDOW] = output_tokens
    pstate[LATENCIES + n % WINDOW] = ttlt
    pstate[G_N_DONE] = n + 1


@allocating
def ring(pstate, start, count):
    """The filled part of a ring buffer (unordered)."""
    return pstate[start:start + min(count, WINDOW)]


@kernel
def arrival_rate(pstate):
    """Arrivals per second over the last ``RATE_WINDOW`` arrivals (0 if fewer than 2)."""
    n = int(pstate[G_N_ARRIVALS])
    m = min(n, RATE_WINDOW)
    if m < 2:
        return 0.0
    newest = pstate[ARRIVALS + (n - 1) % WINDOW]
    oldest = pstate[ARRIVALS + (n - m) % WINDOW]
    return (m - 1) / (newest - oldest) if newest > oldest else 0.0


@allocating
def log_mean_exp(theta, sizes):
    """``ln mean exp(theta S)`` over ``sizes``, without overflow."""
    top = theta * sizes.max()
    acc = 0.0
    for s in sizes:
        acc += np.exp(theta * s - top)
    return top + np.log(acc / sizes.size)


@allocating
def hill_index(sizes):
    """Hill estimate of the tail index from the largest ``HILL_SHARE`` of ``sizes``; inf
    (light) when fewer than half of the ``k + 1`` largest are distinct values (an atomic
    tail, where the estimate would measure only the gaps between atoms)."""
    x = np.sort(sizes)[::-1]
    k = max(int(HILL_SHARE * x.size), 2)
    if k >= x.size or x[k] <= 0.0:
        return np.inf
    distinct = 1
    for j in range(k):
        if x[j] > x[j + 1]:
            distinct += 1
    if 2 * distinct < k + 1:
        return np.inf
    return 1.0 / np.mean(np.log(x[:k] / x[k]))


@allocating
def lundberg_gamma(sizes, lam, gamma_min, gamma_heavy):
    """Positive root of ``lam (E[exp(g S)] - 1) = g`` by bisection in log g, at least
    ``gamma_min``; ``gamma_min`` when the load ``lam E[S]`` is 1 or more (no root),
    ``gamma_heavy`` when the sizes are heavy-tailed."""
    m1 = sizes.mean()
    rho = lam * m1
    if rho >= 0.999 or lam <= 0.0 or m1 <= 0.0:
        return gamma_min
    if hill_index(sizes) < HEAVY_TAIL_INDEX:
        return gamma_heavy
    hi = 2.0 * (1.0 - rho) / (lam * (sizes * sizes).mean())
    lo = 1e-6 * hi
    for _ in range(60):
        mid = np.sqrt(lo * hi)
        f = lam * (np.expm1(log_mean_exp(mid, sizes))) - mid
        if f < 0.0:
            lo = mid
        else:
            hi = mid
    return max(np.sqrt(lo * hi), gamma_min)


@allocating
def ada_target(latencies, gamma_max):
    ordered = np.sort(latencies)
    t95 = percentile(ordered, 95.0)
    t99 = percentile(ordered, 99.0)
    excess = t99 / t95 - 1.0 if t95 > 0.0 else 0.0
    return gamma_max / (1.0 + 4.0 * max(excess, 0.0))


@kernel
def percentile(ordered, q):
    """``np.percentile(x, q)`` (linear interpolation) of finite ``x`` given sorted, with
    numba's arithmetic (bit for bit), without compiling numba's general implementation."""
    n = ordered.shape[0]
    if n == 1 or q == 100.0:
        return ordered[n - 1]
    if q == 0.0:
        return ordered[0]
    rank = 1 + (n - 1) * (q / 100.0)
    f = math.floor(rank)
    m = rank - f
    k = int(f - 1)
    return ordered[k] * (1 - m) + ordered[k + 1] * m


@kernel
def smooth_gamma_linear(old, target, beta, gamma_min, gamma_max):
    """SGLang's gamma-Ada smoothing: ``(1 - beta) old + beta target``, clamped to
    [gamma_min, gamma_max]."""
    return min(max((1.0 - beta) * old + beta * target, gamma_min), gamma_max)


@kernel
def smooth_gamma(old, target, beta, gamma_min, gamma_max):
    """EMA in log gamma, at most x2 or /2 per update, clamped to [gamma_min, gamma_max]."""
    target = min(max(target, gamma_min), gamma_max)
    step = beta * (np.log(target) - np.log(old))
    step = min(max(step, -np.log(2.0)), np.log(2.0))
    return min(max(old * np.exp(step), gamma_min), gamma_max)
