"""One engine step (schedule, time it, emit tokens) and the run loop over steps."""
import numpy as np
from numba import njit

from ..policies import dispatch
from .cost import batch_features, step_time
from .heap import heap_push, heapify
from .layout import (ARRIVAL, B_NEW, B_REQ, BLOCKS, C_BUDGET, C_CHECK, C_GPU_BLOCKS, C_HOST_BLOCKS, C_MODE,
                     C_POLICY, C_REPRIORITIZE, CF_REFRESH_S, CF_SWAP_S_PER_BLOCK, COMPUTED, DONE,
                     ERR_BLOCKS, ERR_STALL, FIRST_TOKEN, GENERATED, HOST_BLOCKS, L_BATCH,
                     L_CONTEXT, L_DECODE, L_DT, L_END, L_FREE, L_HELD, L_PREFILL, L_RUNNING,
                     L_SWAP, L_WAITING, LAST_TOKEN, MAX_GAP, MODE_PREEMPTIVE, NEXT_PRIO, PRIO,
                     PRIO_CHANGES,
                     PROMPT,
                     Q_RUNNING, Q_SWAPPED, Q_WAITING, S_BATCH, S_ERROR, S_FREE_BLOCKS,
                     S_FREE_HOST, S_N_FINISHED, S_N_RUNNING, S_N_SWAPPED, S_N_WAITING,
                     S_NEXT_ARRIVAL, S_PREEMPTED_NOW, S_STEPS, S_SWAP_BLOCKS, ST_FINISHED,
                     ST_FUTURE, ST_WAITING, STATUS, SUM_GAP, T_BUSY, T_NEXT_REFRESH, T_NOW)
from .schedule import (break_stall, schedule_preemptive, schedule_running, schedule_swapped,
                       schedule_waiting)


@njit(cache=True, inline="always")
def admit_arrivals(rf, ri, hint, queues, s, cfg_i, params, pstate, now):
    """Move every request that has arrived by ``now`` into the waiting heap."""
    n = rf.shape[0]
    k = s[S_NEXT_ARRIVAL]
    pid = cfg_i[C_POLICY]
    while k < n and rf[k, ARRIVAL] <= now:
        if ri[k, STATUS] == ST_FUTURE:
            ri[k, STATUS] = ST_WAITING
            dispatch.on_arrival(pid, params, pstate, rf[k, ARRIVAL])
            rf[k, PRIO] = dispatch.priority(pid, params, pstate, hint, rf, ri, k, now)
            heap_push(queues[Q_WAITING], s, S_N_WAITING, rf, k)
        k += 1
    s[S_NEXT_ARRIVAL] = k


@njit(cache=True)
def reprioritize_all(rf, ri, hint, queues, s, cfg_i, params, pstate, now):
    """Recompute every queued and running priority and restore the heaps."""
    pid = cfg_i[C_POLICY]
    for q, slot in ((Q_WAITING, S_N_WAITING), (Q_SWAPPED, S_N_SWAPPED), (Q_RUNNING, S_N_RUNNING)):
        for p in range(s[slot]):
            i = queues[q, p]
            rf[i, PRIO] = dispatch.priority(pid, params, pstate, hint, rf, ri, i, now)
            ri[i, NEXT_PRIO] = 0  # the knobs behind the threshold may have changed
    heapify(queues[Q_WAITING], s[S_N_WAITING], rf)
    heapify(queues[Q_SWAPPED], s[S_N_SWAPPED], rf)


@njit(cache=True, inline="always")
def emit_tokens(rf, ri, target, hint, queues, batch, s, cfg_i, params, pstate, end):
    """Advance every scheduled request; sample a token where its KV caught up with its
    tokens; finish requests that reached their output length and free their blocks."""
    pid = cfg_i[C_POLICY]
    reprioritize = cfg_i[C_REPRIORITIZE] == 1
    finished = 0
    for b in range(s[S_BATCH]):
        i = batch[B_REQ, b]
        ri[i, COMPUTED] += batch[B_NEW, b]
        if ri[i, COMPUTED] == ri[i, PROMPT] + ri[i, GENERATED]:
            g = ri[i, GENERATED] + 1
            ri[i, GENERATED] = g
            if g == 1:
                rf[i, FIRST_TOKEN] = end
            else:
                gap = end - rf[i, LAST_TOKEN]
                rf[i, SUM_GAP] += gap
                if gap > rf[i, MAX_GAP]:
                    rf[i, MAX_GAP] = gap
            rf[i, LAST_TOKEN] = end
            if g == target[i]:
                ri[i, STATUS] = ST_FINISHED
                rf[i, DONE] = end
                s[S_FREE_BLOCKS] += ri[i, BLOCKS]
                ri[i, BLOCKS] = 0
                finished += 1
                dispatch.on_finish(pid, params, pstate, rf, ri, i, g, end)
                continue
        if reprioritize and ri[i, GENERATED] >= ri[i, NEXT_PRIO]:
            new = dispatch.priority(pid, params, pstate, hint, rf, ri, i, end)
            ri[i, NEXT_PRIO] = dispatch.next_change(pid, params, ri, i)
            if new != rf[i, PRIO]:
                rf[i, PRIO] = new
                ri[i, PRIO_CHANGES] += 1
    if finished == 0:
        return
    s[S_N_FINISHED] += finished
    running = queues[Q_RUNNING]
    kept = 0
    for k in range(s[S_N_RUNNING]):
        i = running[k]
        if ri[i, STATUS] != ST_FINISHED:
            running[kept] = i
            kept += 1
    s[S_N_RUNNING] = kept


@njit(cache=True)
def blocks_conserved(ri, s, cfg_i):
    return (ri[:, BLOCKS].sum() + s[S_FREE_BLOCKS] == cfg_i[C_GPU_BLOCKS]
            and ri[:, HOST_BLOCKS].sum() + s[S_FREE_HOST] == cfg_i[C_HOST_BLOCKS]
            and s[S_FREE_BLOCKS] >= 0 and s[S_FREE_HOST] >= 0)


@njit(cache=True)
def log_step(log, row, t, ri, queues, s, x, dt, swap_blocks):
    log[row, L_END] = t[T_NOW]
    log[row, L_DT] = dt
    log[row, L_PREFILL] = x[1]
    log[row, L_DECODE] = x[2]
    log[row, L_CONTEXT] = x[3]
    log[row, L_BATCH] = s[S_BATCH]
    log[row, L_FREE] = s[S_FREE_BLOCKS]
    held = 0
    for k in range(s[S_N_RUNNING]):
        held += ri[queues[Q_RUNNING, k], BLOCKS]
    log[row, L_HELD] = held
    log[row, L_WAITING] = s[S_N_WAITING]
    log[row, L_RUNNING] = s[S_N_RUNNING]
    log[row, L_SWAP] = swap_blocks


@njit(cache=True, inline="always")
def form_batch(rf, ri, queues, batch, s, cfg_i, cfg_f, coef, now):
    """Schedule one step. Returns False when the step must be re-planned at once (a
    preemption left nothing to run)."""
    s[S_BATCH] = 0
    s[S_PREEMPTED_NOW] = 0
    if cfg_i[C_MODE] == MODE_PREEMPTIVE:
        schedule_preemptive(rf, ri, queues, batch, s, cfg_i, cfg_f, coef, now)
        if s[S_BATCH] == 0 and s[S_N_RUNNING] > 0:
            break_stall(rf, ri, queues, s, cfg_i, cfg_f, coef)
            return False
        return True
    budget = schedule_running(rf, ri, queues, batch, s, cfg_i, cfg_f, coef, cfg_i[C_BUDGET])
    if s[S_PREEMPTED_NOW] == 0:
        if s[S_N_SWAPPED] > 0:
            budget = schedule_swapped(rf, ri, queues, batch, s, cfg_i, budget, now)
        if s[S_N_SWAPPED] == 0 and s[S_N_WAITING] > 0:
            schedule_waiting(rf, ri, queues, batch, s, cfg_i, budget, now)
    return not (s[S_BATCH] == 0 and s[S_PREEMPTED_NOW] == 1)


PLAN_READY = 0   # a batch is formed: time it, then ``finish_step``
PLAN_AGAIN = 1   # the clock jumped or a preemption emptied the batch: plan again
PLAN_DONE = 2    # every request has finished or was rejected
PLAN_STOP = 3    # the clock reached ``until``
PLAN_ERROR = 4   # see ``s[S_ERROR]``


@njit(cache=True, inline="always")
def begin_step(rf, ri, hint, queues, s, t, cfg_i, cfg_f, params, pstate, until):
    """Admit arrivals and refresh the policy before a step is scheduled. ``PLAN_READY`` when
    a batch may be formed now, else ``PLAN_STOP``, ``PLAN_DONE`` or ``PLAN_AGAIN`` (an idle
    engine jumped its clock to the next arrival)."""
    now = t[T_NOW]
    if now >= until:
        return PLAN_STOP
    n_req = rf.shape[0]
    nxt = s[S_NEXT_ARRIVAL]
    if nxt < n_req and rf[nxt, ARRIVAL] <= now:
        admit_arrivals(rf, ri, hint, queues, s, cfg_i, params, pstate, now)
    if s[S_N_WAITING] + s[S_N_SWAPPED] + s[S_N_RUNNING] == 0:
        if s[S_NEXT_ARRIVAL] >= n_req:
            return PLAN_DONE
        t[T_NOW] = min(rf[s[S_NEXT_ARRIVAL], ARRIVAL], until)  # idle: jump ahead
        return PLAN_AGAIN
    if cfg_f[CF_REFRESH_S] > 0.0 and now >= t[T_NEXT_REFRESH]:
        t[T_NEXT_REFRESH] = now + cfg_f[CF_REFRESH_S]
        if dispatch.refresh(cfg_i[C_POLICY], params, pstate):
            reprioritize_all(rf, ri, hint, queues, s, cfg_i, params, pstate, now)
    return PLAN_READY


@njit(cache=True, inline="always")
def plan_step(rf, ri, hint, queues, batch, s, t, cfg_i, cfg_f, coef, params, pstate, until):
    """Admit arrivals, refresh the policy and form the next batch (``PLAN_*`` status)."""
    status = begin_step(rf, ri, hint, queues, s, t, cfg_i, cfg_f, params, pstate, until)
    if status != PLAN_READY:
        return status
    if not form_batch(rf, ri, queues, batch, s, cfg_i, cfg_f, coef, t[T_NOW]):
        return PLAN_AGAIN
    if s[S_BATCH] == 0:
        s[S_ERROR] = ERR_STALL
        return PLAN_ERROR
    return PLAN_READY


@njit(cache=True, inline="always")
def finish_step(rf, ri, target, hint, queues, batch, s, t, cfg_i, params, pstate, dt):
    """The planned batch ran for ``dt`` seconds: emit its tokens and advance the clock."""
    end = t[T_NOW] + dt
    emit_tokens(rf, ri, target, hint, queues, batch, s, cfg_i, params, pstate, end)
    t[T_NOW] = end
    t[T_BUSY] += dt
    s[S_SWAP_BLOCKS] = 0
    s[S_STEPS] += 1
    if cfg_i[C_CHECK] == 1 and not blocks_conserved(ri, s, cfg_i):
        s[S_ERROR] = ERR_BLOCKS


@njit(cache=True)
def run_engine(rf, ri, target, hint, queues, batch, s, t, cfg_i, cfg_f, coef, params, pstate,
               log, max_steps, until):
    """Run engine steps until ``max_steps`` ran, every request is done, an error, or the clock
    reached ``until`` (checked between steps; an idle engine stops at ``until``), timing each
    batch with the step-time model. Returns the number of steps run; fills ``log`` rows when
    it has any."""
    x = np.zeros(coef.shape[1])
    steps = 0
    while steps < max_steps:
        status = plan_step(rf, ri, hint, queues, batch, s, t, cfg_i, cfg_f, coef, params,
                           pstate, until)
        if status == PLAN_AGAIN:
            continue
        if status != PLAN_READY:
            break
        batch_features(batch, s[S_BATCH], x)
        swap_blocks = s[S_SWAP_BLOCKS]
        dt = step_time(coef, x) + swap_blocks * cfg_f[CF_SWAP_S_PER_BLOCK]
        finish_step(rf, ri, target, hint, queues, batch, s, t, cfg_i, params, pstate, dt)
        if log.shape[0] > steps:
            log_step(log, steps, t, ri, queues, s, x, dt, swap_blocks)
        steps += 1
        if s[S_ERROR] != 0:
            break
    return steps
