"""The engine's single entry point into the policies, by policy id.

``priority`` gives a request's priority (lower = served first); ``next_change`` how long it
holds. ``on_arrival`` and
``on_finish`` feed the online statistics; ``refresh`` runs every ``refresh_s`` of simulated
time and returns True when every priority must be recomputed (e.g. gamma changed).
To add a policy: write its function (``@kernel``, ``tailgym.jit``) in its own module, give it an id and a branch
here, and register it in ``registry.py``. The true output length never reaches these
functions; ``hint`` carries what the policy is allowed to know (see ``registry``).
"""

from ..engine.layout import ARRIVAL, PRIO, PROMPT
from ..jit import allocating, kernel
from . import fcfs, online
from .attained import STARVE_S, las_priority, mlfq_priority
from .boost import job_work
from .gittins import build_quanta, gittins_next_change, gittins_priority
from .ltr import ltr_priority
from .sizes import sjf_priority, srpt_priority
from .uniboost import (ALPHA_D, ALPHA_P, build_table, gamma_boost_priority, refresh_gamma,
                       uniboost_dist_priority, uniboost_next_change, uniboost_priority)

(FCFS, SJF_ORACLE, SRPT_ORACLE, SRPT_PREDICTED, LTR, LAS, MLFQ, GAMMA_BOOST_ORACLE, UNIBOOST,
 UNIBOOST_DIST, EXTERNAL, GITTINS_TAIL) = range(12)
UNSCORED = 2.0  # EXTERNAL: priority of a request nobody scored (agent scores lie in [-1, 1])
GAMMA_POLICIES = (GAMMA_BOOST_ORACLE, UNIBOOST, UNIBOOST_DIST, GITTINS_TAIL)


@kernel
def priority(pid, params, pstate, hint, rf, ri, i, now):
    if pid == FCFS:
        return fcfs.priority(rf, ri, i, now, params)
    if pid == SJF_ORACLE:
        return sjf_priority(params, hint, ri, i)
    if pid == SRPT_ORACLE or pid == SRPT_PREDICTED:
        return srpt_priority(params, hint, ri, i)
    if pid == LTR:
        return ltr_priority(params, hint, rf, ri, i, now)
    if pid == LAS:
        return las_priority(params, ri, i)
    if pid == MLFQ:
        return mlfq_priority(params, rf, ri, i, now)
    if pid == GAMMA_BOOST_ORACLE:
        return gamma_boost_priority(params, pstate, hint, rf, ri, i)
    if pid == UNIBOOST:
        return uniboost_priority(params, pstate, rf, ri, i)
    if pid == UNIBOOST_DIST:
        return uniboost_dist_priority(params, pstate, rf, ri, i)
    if pid == GITTINS_TAIL:
        return gittins_priority(params, pstate, rf, ri, i)
    if pid == EXTERNAL:  # set from outside (tailgym/ServePriority-v0), UNSCORED at first
        return rf[i, PRIO]
    raise ValueError("unknown policy id")


@kernel
def next_change(pid, params, ri, i):
    """Generated tokens before which request ``i``'s priority, just computed, stays the same
    (0: it may change after any step); spares recomputing it every step."""
    if pid == UNIBOOST:
        return uniboost_next_change(params, ri, i)
    if pid == GITTINS_TAIL:
        return gittins_next_change(params, ri, i)
    return 0


@kernel
def on_arrival(pid, params, pstate, now):
    if pid in GAMMA_POLICIES:
        online.record_arrival(pstate, now)


@kernel
def on_finish(pid, params, pstate, rf, ri, i, output_tokens, now):
    """Record a completed request (its output length is known once it has finished)."""
    if pid in GAMMA_POLICIES:
        work = job_work(params[ALPHA_P], params[ALPHA_D], ri[i, PROMPT], output_tokens)
        online.record_completion(pstate, work, output_tokens, now - rf[i, ARRIVAL])


@allocating
def refresh(pid, params, pstate):
    if pid == LTR or (pid == MLFQ and params[STARVE_S] > 0.0):
        return True  # starvation promotions depend on waiting time
    if pid not in GAMMA_POLICIES:
        return False
    changed = refresh_gamma(params, pstate)
    if pid == UNIBOOST_DIST or pid == GITTINS_TAIL:
        build_table(params, pstate)
        if pid == GITTINS_TAIL:
            build_quanta(params, pstate)
        return True
    return changed
