"""UniBoost, the reference policy (``../shared/docs/uniboost.md`` sections 3.3-3.6), and the
full-information gamma-Boost it approximates.

Prediction-free: signals are arrival time, prompt length, tokens generated so far, the
cached-prefix length (knob ``cached``) and online statistics of completed requests
(``online``). Priority ``Phi = a - b_gamma(w)``, lower first, on the known work
``w = max(alpha_d * d_hat, alpha_p * p)`` (``p`` prompt tokens, or with ``cached=1`` the
uncached ones, SGLang's cache-aware form), where MemGuard (variant ``full``) quantises the
decode progress ``d`` to ``d_hat`` in {0, k, 2k, 4k, ...} (the largest not above ``d``). The
priority then changes at most ``1 + floor(log2(S / k))`` times over ``S`` decoded tokens and the
boost is bounded by ``b_gamma(alpha_p)`` (a one-token prompt), so a request that has waited
longer than that is never overtaken by a later one. ``memguard=work`` is the ablation that
quantises the whole known work to ``k_w 2^floor(log2(max(w, k_w) / k_w))``, ``k_w = alpha_d k``
(which ties every prompt below ``k_w / alpha_p`` tokens at one boost level).

Variants (knob ``variant``): ``full`` (one priority space with MemGuard, minimum-run guard,
hysteresis and cache-aware victims), ``base`` (no MemGuard quantisation or guard), ``distboost``
(decodes first in admission order, waiting prefills ordered by ``a - b_gamma(alpha_p * p)``).
``gamma_mode``: ``fixed``, ``auto`` (Lundberg root from the arrival rate and completed sizes)
or ``ada`` (from observed tails). ``gamma <= 0`` means no boost (FCFS order), SGLang's fallback.

``uniboost-dist`` (spec 3.4) conditions the boost on attained decode service through the
empirical table ``ln M(d) = ln E[exp(gamma alpha_d (S - d)) | S > d]`` on the MemGuard grid.
"""
import math

import numpy as np

from ..engine.layout import ARRIVAL, COMPUTED, GENERATED, MATCH_TOKENS, PROMPT
from ..jit import allocating, kernel
from . import online
from .boost import MAX_BOOST, b_gamma, job_work

# knob positions; gamma-boost-oracle uses the first ten
(ALPHA_P, ALPHA_D, GAMMA, GAMMA_MODE, GAMMA_MIN, GAMMA_MAX, REFRESH_S, BETA, ADA_SMOOTHING,
 GAMMA_HEAVY, K, DELTA, VARIANT, COST_AWARE, RESERVE, MEMGUARD, CACHED) = range(17)
FIXED, AUTO, ADA = 0, 1, 2
LINEAR, LOG = 0, 1          # ada_smoothing
FULL, BASE, DISTBOOST = 0, 1, 2
DECODE, WORK = 0, 1         # memguard: quantise decode progress only, or the whole known work
MIN_TABLE_SAMPLES = 50


@kernel
def prompt_work(params, ri, i):
    """Prompt work, s: every prompt token, or (``cached=1``) those the prefix cache does not
    serve: its match at arrival or the latest refresh while waiting, its hit once admitted."""
    tokens = ri[i, PROMPT]
    if params[CACHED] == 1.0:
        tokens = max(tokens - ri[i, MATCH_TOKENS], 0)
    return params[ALPHA_P] * tokens


@kernel
def known_work(params, ri, i):
    return max(params[ALPHA_D] * ri[i, GENERATED], prompt_work(params, ri, i))


@kernel
def memguard(work, k_work):
    """Geometric quantisation: k_w, 2 k_w, 4 k_w, ... (the largest not above ``work``)."""
    if k_work <= 0.0:
        return work
    exponent = math.frexp(max(work, k_work) / k_work)[1]  # x = m 2^e, m in [0.5, 1)
    return math.ldexp(k_work, exponent - 1)


@kernel
def decode_level(generated, k):
    """MemGuard's decode progress, tokens: 0 below ``k``, then k, 2k, 4k, ... (``k <= 0``:
    unquantised)."""
    if k <= 0.0:
        return float(generated)
    if generated < k:
        return 0.0
    return memguard(float(generated), k)


@kernel
def uniboost_priority(params, pstate, rf, ri, i):
    gamma = pstate[online.G_GAMMA]
    if params[VARIANT] == DISTBOOST:
        return rf[i, ARRIVAL] - b_gamma(gamma, prompt_work(params, ri, i))
    if params[VARIANT] == BASE:
        work = known_work(params, ri, i)
    elif params[MEMGUARD] == WORK:
        work = memguard(known_work(params, ri, i), params[ALPHA_D] * params[K])
    else:
        work = max(params[ALPHA_D] * decode_level(ri[i, GENERATED], params[K]),
                   prompt_work(params, ri, i))
    return rf[i, ARRIVAL] - b_gamma(gamma, work)


@kernel
def uniboost_next_change(params, ri, i):
    """Generated tokens before which the full variant's priority cannot change. Decode
    quantisation holds the level ``q`` until ``2 q`` tokens (``k`` from below); whole-work
    quantisation holds the work ``q`` until it reaches ``2 q`` (one token early, against
    rounding)."""
    if params[VARIANT] != FULL or params[K] <= 0.0:
        return 0
    if params[MEMGUARD] == WORK:
        q = memguard(known_work(params, ri, i), params[ALPHA_D] * params[K])
        return max(int(2.0 * q / params[ALPHA_D]) - 1, 0)
    q = decode_level(ri[i, GENERATED], params[K])
    return int(math.ceil(max(2.0 * q, params[K])))


@kernel
def grid_index(d, k, size):
    """Index of the MemGuard grid point (0, k, 2k, 4k, ...) at or below ``d`` tokens."""
    if d < k or k <= 0:
        return 0
    return min(1 + int(np.floor(np.log2(d / k))), size - 1)


@kernel
def grid_tokens(g, k):
    return 0.0 if g == 0 else k * 2.0 ** (g - 1)


@allocating
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
        pstate[online.TABLE + g] = online.log_mean_exp(scale, longer - d)
    pstate[online.G_TABLE_READY] = 1.0 if pstate[online.TABLE] == pstate[online.TABLE] else 0.0


@kernel
def table_point(params, pstate, ri, i):
    """Request ``i``'s grid point with table data (the one at or below its decode progress)
    and its remaining prompt work times gamma (0 once it decodes)."""
    generated = ri[i, GENERATED]
    g = grid_index(generated, params[K], online.GRID)
    while pstate[online.TABLE + g] != pstate[online.TABLE + g]:  # nan: too few samples
        g -= 1
    prompt_left = max(ri[i, PROMPT] - ri[i, COMPUTED], 0) if generated == 0 else 0
    return g, pstate[online.G_GAMMA] * params[ALPHA_P] * prompt_left


@kernel
def uniboost_dist_priority(params, pstate, rf, ri, i):
    if pstate[online.G_TABLE_READY] == 0.0:
        return uniboost_priority(params, pstate, rf, ri, i)
    gamma = pstate[online.G_GAMMA]
    g, fixed = table_point(params, pstate, ri, i)
    log_m = fixed + pstate[online.TABLE + g]
    if log_m <= 0.0:
        return rf[i, ARRIVAL] - MAX_BOOST
    return rf[i, ARRIVAL] + np.log1p(-np.exp(-log_m)) / gamma


@kernel
def gamma_boost_priority(params, pstate, hint, rf, ri, i):
    """Full-information gamma-Boost on the true job work (an upper reference)."""
    work = job_work(params[ALPHA_P], params[ALPHA_D], ri[i, PROMPT], hint[i])
    return rf[i, ARRIVAL] - b_gamma(pstate[online.G_GAMMA], work)


@allocating
def refresh_gamma(params, pstate):
    """Re-estimate gamma (modes auto and ada); True if it changed. A start value
    ``gamma <= 0`` (FCFS fallback) is kept."""
    mode = params[GAMMA_MODE]
    n = int(pstate[online.G_N_DONE])
    old = pstate[online.G_GAMMA]
    if mode == FIXED or n < online.MIN_SAMPLES or old <= 0.0:
        return False
    lo, hi = params[GAMMA_MIN], params[GAMMA_MAX]
    if mode == AUTO:
        sizes = online.ring(pstate, online.SIZES, n)
        target = online.lundberg_gamma(sizes, online.arrival_rate(pstate), lo, params[GAMMA_HEAVY])
        lo = min(lo, params[GAMMA_HEAVY])
    else:
        target = online.ada_target(online.ring(pstate, online.LATENCIES, n), hi)
    if mode == ADA and params[ADA_SMOOTHING] == LINEAR:
        new = online.smooth_gamma_linear(old, target, params[BETA], lo, hi)
    else:
        new = online.smooth_gamma(old, target, params[BETA], lo, hi)
    pstate[online.G_GAMMA] = new
    return new != old
