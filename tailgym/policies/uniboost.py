"""UniBoost, the reference policy (``../shared/docs/uniboost.md`` sections 3.3-3.6), and the
full-information gamma-Boost it approximates.

Prediction-free: signals are arrival time, prompt length, tokens generated so far and online
statistics of completed requests (``online``). Priority ``Phi = a - b_gamma(w_hat)``, lower
first, where the known work is ``w~ = max(alpha_d * generated, alpha_p * prompt)`` and MemGuard
quantises it to ``w_hat = k_w 2^floor(log2(max(w~, k_w) / k_w))`` with ``k_w = alpha_d * k``.

Variants (knob ``variant``): ``full`` (one priority space with MemGuard, minimum-run guard,
hysteresis and cache-aware victims), ``base`` (no MemGuard quantisation or guard), ``distboost``
(decodes first in admission order, waiting prefills ordered by ``a - b_gamma(alpha_p * p)``).
``gamma_mode``: ``fixed``, ``auto`` (Lundberg root from the arrival rate and completed sizes)
or ``ada`` (from observed tails).

``uniboost-dist`` (spec 3.4) conditions the boost on attained decode service through the
empirical table ``ln M(d) = ln E[exp(gamma alpha_d (S - d)) | S > d]`` on the MemGuard grid.
"""
import math

import numpy as np
from numba import njit

from ..engine.layout import ARRIVAL, COMPUTED, GENERATED, PROMPT
from . import online
from .boost import MAX_BOOST, b_gamma, job_work

# knob positions; gamma-boost-oracle uses the first eight
(ALPHA_P, ALPHA_D, GAMMA, GAMMA_MODE, GAMMA_MIN, GAMMA_MAX, REFRESH_S, BETA, K, DELTA, VARIANT,
 COST_AWARE, RESERVE) = range(13)
FIXED, AUTO, ADA = 0, 1, 2
FULL, BASE, DISTBOOST = 0, 1, 2
MIN_TABLE_SAMPLES = 50


@njit(cache=True, inline="always")
def known_work(params, ri, i):
    return max(params[ALPHA_D] * ri[i, GENERATED], params[ALPHA_P] * ri[i, PROMPT])


@njit(cache=True, inline="always")
def memguard(work, k_work):
    """Geometric quantisation: k_w, 2 k_w, 4 k_w, ... (the largest not above ``work``)."""
    if k_work <= 0.0:
        return work
    exponent = math.frexp(max(work, k_work) / k_work)[1]  # x = m 2^e, m in [0.5, 1)
    return math.ldexp(k_work, exponent - 1)


@njit(cache=True, inline="always")
def uniboost_priority(params, pstate, rf, ri, i):
    gamma = pstate[online.G_GAMMA]
    if params[VARIANT] == DISTBOOST:
        return rf[i, ARRIVAL] - b_gamma(gamma, params[ALPHA_P] * ri[i, PROMPT])
    work = known_work(params, ri, i)
    if params[VARIANT] == FULL:
        work = memguard(work, params[ALPHA_D] * params[K])
    return rf[i, ARRIVAL] - b_gamma(gamma, work)


@njit(cache=True, inline="always")
def uniboost_next_change(params, ri, i):
    """Generated tokens before which the full variant's priority cannot change: MemGuard
    holds the work at ``q`` until it reaches ``2 q`` (one token early, against rounding)."""
    k_work = params[ALPHA_D] * params[K]
    if params[VARIANT] != FULL or k_work <= 0.0:
        return 0
    q = memguard(known_work(params, ri, i), k_work)
    return max(int(2.0 * q / params[ALPHA_D]) - 1, 0)


@njit(cache=True, inline="always")
def grid_index(d, k, size):
    """Index of the MemGuard grid point (0, k, 2k, 4k, ...) at or below ``d`` tokens."""
    if d < k or k <= 0:
        return 0
    return min(1 + int(np.floor(np.log2(d / k))), size - 1)


@njit(cache=True)
def grid_tokens(g, k):
    return 0.0 if g == 0 else k * 2.0 ** (g - 1)


@njit(cache=True)
def build_table(params, pstate):
    """Fill ``ln M(d)`` on the grid from recent completions; nan where fewer than
    ``MIN_TABLE_SAMPLES`` completions outlived ``d``."""
    gamma = pstate[online.G_GAMMA]
    decodes = online.ring(pstate, online.DECODES, int(pstate[online.G_N_DONE]))
    scale = gamma * params[ALPHA_D]
    for g in range(online.GRID):
        d = grid_tokens(g, params[K])
        longer = decodes[decodes > d]
        if longer.size < MIN_TABLE_SAMPLES:
            pstate[online.TABLE + g] = np.nan
            continue
        top = scale * (longer.max() - d)
        acc = 0.0
        for s in longer:
            acc += np.exp(scale * (s - d) - top)
        pstate[online.TABLE + g] = top + np.log(acc / longer.size)
    pstate[online.G_TABLE_READY] = 1.0 if pstate[online.TABLE] == pstate[online.TABLE] else 0.0


@njit(cache=True, inline="always")
def uniboost_dist_priority(params, pstate, rf, ri, i):
    if pstate[online.G_TABLE_READY] == 0.0:
        return uniboost_priority(params, pstate, rf, ri, i)
    gamma = pstate[online.G_GAMMA]
    generated = ri[i, GENERATED]
    g = grid_index(generated, params[K], online.GRID)
    while pstate[online.TABLE + g] != pstate[online.TABLE + g]:  # nan: too few samples
        g -= 1
    prompt_left = max(ri[i, PROMPT] - ri[i, COMPUTED], 0) if generated == 0 else 0
    log_m = gamma * params[ALPHA_P] * prompt_left + pstate[online.TABLE + g]
    if log_m <= 0.0:
        return rf[i, ARRIVAL] - MAX_BOOST
    return rf[i, ARRIVAL] + np.log1p(-np.exp(-log_m)) / gamma


@njit(cache=True, inline="always")
def gamma_boost_priority(params, pstate, hint, rf, ri, i):
    """Full-information gamma-Boost on the true job work (an upper reference)."""
    work = job_work(params[ALPHA_P], params[ALPHA_D], ri[i, PROMPT], hint[i])
    return rf[i, ARRIVAL] - b_gamma(pstate[online.G_GAMMA], work)


@njit(cache=True)
def refresh_gamma(params, pstate):
    """Re-estimate gamma (modes auto and ada); True if it changed."""
    mode = params[GAMMA_MODE]
    n = int(pstate[online.G_N_DONE])
    if mode == FIXED or n < online.MIN_SAMPLES:
        return False
    if mode == AUTO:
        sizes = online.ring(pstate, online.SIZES, n)
        target = online.lundberg_gamma(sizes, online.arrival_rate(pstate), params[GAMMA_MIN])
    else:
        target = online.ada_target(online.ring(pstate, online.LATENCIES, n), params[GAMMA_MAX])
    old = pstate[online.G_GAMMA]
    new = online.smooth_gamma(old, target, params[BETA], params[GAMMA_MIN], params[GAMMA_MAX])
    pstate[online.G_GAMMA] = new
    return new != old
