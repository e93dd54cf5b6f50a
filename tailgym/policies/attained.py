"""Policies that favour requests with little attained service: LAS and skip-join MLFQ.

Attained work = ``alpha_p * prompt tokens prefilled + alpha_d * tokens generated`` (seconds).

* ``las``: least attained service first (preemptive); ties by arrival. Its knob ``k`` protects
  a (re)dispatched request from eviction for k, 2k, 4k... tokens (the engine's MemGuard
  guard): pure LAS (``k=0``) re-ranks after every token and, when seats or KV are short,
  evicts after every token, which under recompute preemption collapses throughput.
* ``mlfq`` (FastServe's skip-join MLFQ): level quanta ``q0 * 2^j``; a request joins the first
  level whose quantum covers its prompt work, and drops one level each time its decode work
  exhausts the quantum of its level; lower level first, FCFS within a level; ``levels`` caps j.

Signals: prompt length, tokens prefilled and generated, arrival time.
"""
import numpy as np
from numba import njit

from ..engine.layout import COMPUTED, GENERATED, PROMPT

ALPHA_P, ALPHA_D, Q0, LEVELS = 0, 1, 2, 3


@njit(cache=True, inline="always")
def las_priority(params, ri, i):
    generated = ri[i, GENERATED]
    prefilled = ri[i, PROMPT] if generated > 0 else ri[i, COMPUTED]
    return params[ALPHA_P] * prefilled + params[ALPHA_D] * generated


@njit(cache=True, inline="always")
def mlfq_priority(params, ri, i):
    q0 = params[Q0]
    prompt_work = params[ALPHA_P] * ri[i, PROMPT]
    first = 0 if prompt_work <= q0 else int(np.ceil(np.log2(prompt_work / q0)))
    decode_work = params[ALPHA_D] * ri[i, GENERATED]
    demotions = int(np.floor(np.log2(decode_work / (q0 * 2.0 ** first) + 1.0)))
    return float(min(first + demotions, int(params[LEVELS]) - 1))
