"""Policies that favour requests with little attained service: LAS and skip-join MLFQ.

Attained work = ``alpha_p * prompt tokens prefilled + alpha_d * tokens generated`` (seconds);
prefill dropped by a recompute preemption still counts as attained (it was served), so two
partly prefilled requests cannot keep evicting each other.

* ``las``: least attained service first (preemptive); ties by arrival. Its knob ``k`` protects
  a (re)dispatched request from eviction for k, 2k, 4k... tokens (the engine's MemGuard
  guard): pure LAS (``k=0``) re-ranks after every token and, when seats or KV are short,
  evicts after every token, which under recompute preemption collapses throughput.
* ``mlfq`` (FastServe's skip-join MLFQ): level quanta ``q0 * 2^j``; a request joins the first
  level whose quantum covers its prompt work, and drops one level each time its decode work
  exhausts the quantum of its level; lower level first, FCFS within a level; ``levels`` caps j.
  FastServe's protections are knobs, off by default: ``k``, a minimum run after (re)dispatch
  as LAS's, and ``starve_s``, starvation promotion: a queued request not served for more than
  ``starve_s`` seconds (since its arrival or its latest token) moves above every level, FCFS
  among the promoted, until it is scheduled.

Signals: prompt length, tokens prefilled and generated, arrival time.
"""
import numpy as np

from ..engine.layout import (ARRIVAL, COMPUTED, GENERATED, LAST_TOKEN, PROMPT, RECOMPUTED_TOKENS,
                             ST_RUNNING, STATUS)
from ..jit import kernel

ALPHA_P, ALPHA_D, Q0, LEVELS, MLFQ_K, STARVE_S = 0, 1, 2, 3, 4, 5
PROMOTED = -1.0  # above level 0


@kernel
def las_priority(params, ri, i):
    generated = ri[i, GENERATED]
    served = ri[i, COMPUTED] + ri[i, RECOMPUTED_TOKENS]
    prefilled = ri[i, PROMPT] if generated > 0 else min(served, ri[i, PROMPT])
    return params[ALPHA_P] * prefilled + params[ALPHA_D] * generated


@kernel
def starving(params, rf, ri, i, now):
    """True if queued request ``i`` has not been served for more than ``starve_s``."""
    if params[STARVE_S] <= 0.0 or ri[i, STATUS] == ST_RUNNING:
        return False
    served = rf[i, LAST_TOKEN] if ri[i, GENERATED] > 0 else rf[i, ARRIVAL]
    return now - served > params[STARVE_S]


@kernel
def mlfq_priority(params, rf, ri, i, now):
    if starving(params, rf, ri, i, now):
        return PROMOTED
    q0 = params[Q0]
    prompt_work = params[ALPHA_P] * ri[i, PROMPT]
    first = 0 if prompt_work <= q0 else int(np.ceil(np.log2(prompt_work / q0)))
    decode_work = params[ALPHA_D] * ri[i, GENERATED]
    demotions = int(np.floor(np.log2(decode_work / (q0 * 2.0 ** first) + 1.0)))
    return float(min(first + demotions, int(params[LEVELS]) - 1))
